"""Tensors of the Open Inference Protocol (KServe v2) in and out, for server/kserve.py.

`decode_v2` turns a request body — JSON tensors, or the binary-data extension
(a JSON header of ``Inference-Header-Content-Length`` bytes, then raw
little-endian tensor bytes) — into the request core's `InferCall`
(server/request_core.py), reusing the shared decoders (`decode_nested_list`,
`decode_raw`). `class_and_slo` and `runner_options` map the request's
``parameters`` onto our classes, SLOs, backends and precisions (rules in
server/kserve.py's docstring; the gRPC adapter uses them too). `encode_v2`
writes the answer: the ``output`` logits tensor as JSON or raw bytes, or
Triton's BYTES classification tensor.

Pure functions of their arguments (no I/O, no event loop), so large bodies can
be decoded and encoded on a worker thread.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from scheduling.job import JOB_CLASSES
from server.codecs import MAX_DIM, MAX_DIMS, InputError, decode_nested_list, decode_raw, top_k
from server.echo import echo
from server.errors import MalformedBody
from server.json_budget import check_json_values, json_value_limit
from server.request_core import Answer, InferCall, job_timing
from server.schemas import MAX_SLO_MS
from server.wire_ints import parse_wire_int

if TYPE_CHECKING:
    from server.gateway import Gateway

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME, OUTPUT_NAME = "input", "output"
#: Every model is served at one version.
MODEL_VERSION = "1"
_PRIORITY_WORDS = {"high": "interactive", "interactive": "interactive"}
_PRIORITY_WORDS |= {"low": "batch", "batch": "batch"}


class V2Input(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: Annotated[
        list[Annotated[StrictInt, Field(ge=1, le=MAX_DIM)]],
        Field(min_length=1, max_length=MAX_DIMS),
    ]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class V2Output(BaseModel):
    """One output a request asks for."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class V2Request(BaseModel):
    """The JSON (header) of POST /v2/models/{name}/infer."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256)  # echoed in the answer: kept short
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[V2Input] = Field(min_length=1)
    outputs: list[V2Output] | None = None


@dataclass(frozen=True)
class WantedOutput:
    """How one requested output is answered."""

    name: str
    #: Raw bytes after the JSON header instead of a JSON list.
    binary: bool
    #: Top-k classification strings instead of logits; 0: logits.
    classification: int


@dataclass(frozen=True)
class V2Decoded:
    """A decoded v2 request: the core's call plus what the answer needs."""

    call: InferCall
    request_id: str | None = None
    outputs: tuple[WantedOutput, ...] = ()


# ------------------------------------------------------------------ request mapping
def class_and_slo(parameters: Mapping[str, Any], samples: int) -> tuple[str, float | None]:
    """The job class and SLO (ms, None: the class default) of a request's parameters."""
    return _job_class(parameters, samples), _slo_ms(parameters)


def _job_class(parameters: Mapping[str, Any], samples: int) -> str:
    value = parameters.get("class")
    if value is not None:
        if not isinstance(value, str) or value not in JOB_CLASSES:
            raise InputError(
                "parameters.class", f"class must be 'interactive' or 'batch', got {echo(value)}"
            )
        return value
    by_priority = _class_of_priority(parameters.get("priority"))
    if by_priority is not None:
        return by_priority
    return "interactive" if samples == 1 else "batch"


def _class_of_priority(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _PRIORITY_WORDS:
            return _PRIORITY_WORDS[word]
        level = parse_wire_int(word)
        if level is None:  # not even a number: malformed, as a bad header is (400)
            raise MalformedBody(
                f"parameters.priority: {echo(value)} is not a level (an integer >= 0, 1 "
                "the highest) nor 'high'/'low'",
                field="parameters.priority",
            )
        value = level
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(
            "parameters.priority",
            f"priority must be a level >= 0 (1 is the highest) or 'high'/'low', got {echo(value)}",
        )
    if value == 0:
        return None  # Triton: 0 is the model's default level, i.e. not given
    return "interactive" if value == 1 else "batch"


def _slo_ms(parameters: Mapping[str, Any]) -> float | None:
    if "slo_ms" in parameters:
        key, scale = "slo_ms", 1.0
    elif "timeout" in parameters:
        key, scale = "timeout", 1e-3  # Triton's timeout is in microseconds
    else:
        return None
    value, where = parameters[key], f"parameters.{key}"
    number = _number(value)
    if number is None or math.isnan(number):
        raise InputError(where, f"{where} must be a number, got {echo(value)}")
    if number == 0 and key == "timeout":
        return None  # Triton: a timeout of 0 means none
    slo_ms = number * scale
    if not 0 < slo_ms <= MAX_SLO_MS:
        raise InputError(where, f"{where}={echo(value)} is outside (0, {MAX_SLO_MS}] ms")
    return slo_ms


def _number(value: Any) -> float | None:
    """A JSON number as a float (an integer too large for one is inf); None if not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # JSON integers have no size limit
        return math.inf


# ------------------------------------------------------------------ decoding
def runner_options(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The ``backend`` and ``precision`` a request's parameters name (strings only)."""
    options = {}
    for key in ("backend", "precision"):
        value = parameters.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"parameters.{key}", f"{key} must be a string, got {echo(value)}")
        options[key] = value
    return options


def decode_v2(gw: Gateway, model: str, body: bytes, header_length: str | None) -> V2Decoded:
    """Decode a v2 request body into the core's call (pure: may run on a thread)."""
    spec = gw.models.require(model).spec
    header, binary = _split(body, header_length)
    check_json_values(header, json_value_limit(gw.config, [spec]))
    request = V2Request.model_validate_json(header)
    array = _input_array(request.inputs, binary, model)
    samples = len(array) if array.ndim == len(spec.input_shape) + 1 else 1
    job_class, slo_ms = class_and_slo(request.parameters, samples)
    call = InferCall(model, job_class, slo_ms, inputs=array, **runner_options(request.parameters))
    return V2Decoded(call, request.id, _wanted_outputs(request))


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a body; all JSON without the extension's header."""
    if header_length is None:
        return body, b""
    size = parse_wire_int(header_length)
    if size is None or not 0 < size <= len(body):
        raise MalformedBody(
            f"{HEADER_LENGTH}: {echo(header_length)} is not a length within the "
            f"{len(body)}-byte body",
            field=HEADER_LENGTH,
        )
    return body[:size], body[size:]


def check_input(model: str, inputs: Sequence[Any]) -> str:
    """What every v2 protocol checks of a request's input tensors (the JSON model's or the
    gRPC message's: both have name, datatype, parameters): exactly one, named
    `INPUT_NAME`, FP32, not in shared memory. Returns the input's field path."""
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        names = echo([t.name for t in inputs])
        raise InputError(
            "inputs", f"model {echo(model)} takes one input {INPUT_NAME!r}, got {names}"
        )
    tensor, where = inputs[0], "inputs.0"
    if tensor.datatype != "FP32":
        raise InputError(
            f"{where}.datatype",
            f"datatype {echo(tensor.datatype)} is not supported; model {echo(model)} takes FP32",
        )
    if "shared_memory_region" in tensor.parameters:
        raise InputError(f"{where}.parameters", "shared-memory inputs are not supported")
    return where


def _input_array(inputs: list[V2Input], binary: bytes, model: str) -> np.ndarray:
    """The one input as an array of its declared shape (JSON data or binary bytes)."""
    where = check_input(model, inputs)
    tensor = inputs[0]
    count = math.prod(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise InputError(
                f"{where}.data", "the input has neither data nor parameters.binary_data_size"
            )
        if binary:
            raise InputError("body", f"{len(binary)} binary bytes follow the header unclaimed")
        values = decode_nested_list(tensor.data)
        if values.size != count:
            raise InputError(
                f"{where}.data",
                f"data has {values.size} values; shape {tensor.shape} needs {count}",
            )
        return values.reshape(tensor.shape)
    if tensor.data is not None:
        raise InputError(where, "give either data or parameters.binary_data_size, not both")
    if isinstance(size, bool) or not isinstance(size, int) or size != count * 4:
        raise InputError(
            f"{where}.parameters.binary_data_size",
            f"binary_data_size {echo(size)} does not match FP32 shape {tensor.shape} "
            f"({count * 4} bytes)",
        )
    if len(binary) != size:
        raise InputError("body", f"{len(binary)} bytes follow the header; the input says {size}")
    return decode_raw(binary, tensor.shape, f"{where}.shape", "the binary input")


def check_output_name(name: str, where: str) -> None:
    """InputError unless `name` is the model's one output (any protocol's request)."""
    if name != OUTPUT_NAME:
        raise InputError(
            f"{where}.name", f"unknown output {echo(name)}; the model has {OUTPUT_NAME!r}"
        )


def _wanted_outputs(request: V2Request) -> tuple[WantedOutput, ...]:
    default = _flag(request.parameters, "binary_data_output", "parameters", False)
    if not request.outputs:
        return (WantedOutput(OUTPUT_NAME, default, 0),)
    wanted = []
    for i, out in enumerate(request.outputs):
        where = f"outputs.{i}"
        check_output_name(out.name, where)
        k = out.parameters.get("classification", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"{where}.parameters.classification", f"not a class count: {echo(k)}")
        binary = _flag(out.parameters, "binary_data", f"{where}.parameters", default)
        wanted.append(WantedOutput(out.name, binary, k))
    return tuple(wanted)


def _flag(parameters: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"{where}.{key}", f"{key} must be true or false, got {echo(value)}")
    return value


# ------------------------------------------------------------------ encoding
def encode_v2(decoded: V2Decoded, answer: Answer) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the body is all JSON) of an answer."""
    entries, blobs = [], []
    for want in decoded.outputs:
        entry, blob = output_tensor(answer.outputs, want)
        entries.append(entry)
        if blob is not None:
            blobs.append(blob)
    job = answer.job
    header: dict[str, Any] = {"model_name": job.workload, "model_version": MODEL_VERSION}
    if decoded.request_id is not None:
        header["id"] = decoded.request_id
    header["parameters"] = answer_parameters(answer)
    header["outputs"] = entries
    text = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)


def answer_parameters(answer: Answer) -> dict[str, Any]:
    """What POST /infer reports beside its outputs, as v2 response parameters."""
    job = answer.job
    return {
        "class": job.job_class,
        "slo_ms": answer.slo_ms,
        "slo_met": job.slo_met,
        **job_timing(job).model_dump(),
        "batch_size": answer.batch_size,
        "lane": job.lane,
        "backend": job.backend,
        "precision": job.precision,
    }


def output_tensor(outputs: np.ndarray, want: WantedOutput) -> tuple[dict[str, Any], bytes | None]:
    """One output entry of the answer, and its bytes when it travels as binary."""
    rows = outputs.reshape(len(outputs), -1)
    if want.classification:
        return _classification(rows, want)
    entry: dict[str, Any] = {"name": want.name, "datatype": "FP32", "shape": list(outputs.shape)}
    if not want.binary:
        return {**entry, "data": rows.ravel().tolist()}, None
    blob = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    return {**entry, "parameters": {"binary_data_size": len(blob)}}, blob


def _classification(rows: np.ndarray, want: WantedOutput) -> tuple[dict[str, Any], bytes | None]:
    """Triton's classification: a BYTES [N, k] tensor of "value:index", highest first."""
    order, values = top_k(rows, want.classification)
    k = order.shape[1]
    labels = [
        f"{v:f}:{i}"
        for value_row, index_row in zip(values.tolist(), order.tolist(), strict=True)
        for v, i in zip(value_row, index_row, strict=True)
    ]
    entry: dict[str, Any] = {"name": want.name, "datatype": "BYTES", "shape": [len(rows), k]}
    if not want.binary:
        return {**entry, "data": labels}, None
    # BYTES on the wire: each element is a 4-byte little-endian length, then its bytes.
    blob = b"".join(struct.pack("<I", len(s)) + s.encode() for s in labels)
    return {**entry, "parameters": {"binary_data_size": len(blob)}}, blob
