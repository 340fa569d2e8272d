"""ModelInferRequest into the request core's call, its answer into a ModelInferResponse.

The rules are the KServe v2 HTTP routes' (server/kserve.py): one FP32 input
``input``, given as ``raw_input_contents`` (little-endian bytes) or as typed
``contents.fp32_contents``; the request ``parameters`` choose class, SLO, backend
and precision through the same functions (`class_and_slo`, `runner_options`);
outputs go back as ``raw_output_contents``, the logits or, for an output asking
``classification: k``, Triton's BYTES tensor of "value:index" strings.

Pure functions of their arguments (no I/O, no event loop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import Message

from server.codecs import InputError, check_shape, decode_raw
from server.echo import echo
from server.errors import UnknownModel
from server.grpc_v2.messages import ModelInferResponse, WideInferParameter
from server.kserve_codec import (
    MODEL_VERSION,
    OUTPUT_NAME,
    V2Decoded,
    WantedOutput,
    answer_parameters,
    check_input,
    check_output_name,
    class_and_slo,
    output_tensor,
    runner_options,
)
from server.request_core import Answer, InferCall

_CHOICE = "parameter_choice"


def parameter_values(entries: Mapping[str, Message]) -> dict[str, Any]:
    """A ``parameters`` map as plain values (bool, int, str, float).

    KServe's InferParameter holds bool, int64 and string values; Triton's client also
    sends doubles (any float parameter) and uint64s (``priority``), which KServe's
    message keeps as unknown fields: those are read through Triton's wider message.
    A parameter with no value at all is left out.
    """
    values: dict[str, Any] = {}
    for key, entry in entries.items():
        param = entry
        if param.WhichOneof(_CHOICE) is None:
            param = WideInferParameter.FromString(entry.SerializeToString())
        which = param.WhichOneof(_CHOICE)
        if which is not None:
            values[key] = getattr(param, which)
    return values


def check_version(name: str, version: str) -> None:
    """UnknownModel (NOT_FOUND) for a version other than the one served; "" picks it."""
    if version not in ("", MODEL_VERSION):
        raise UnknownModel(
            f"model {echo(name)} has no version {echo(version)}; versions: {MODEL_VERSION}"
        )


def decode_infer(request: Any, sample_shape: tuple[int, ...]) -> V2Decoded:
    """The core's call for a ModelInferRequest to a model whose samples are `sample_shape`."""
    check_version(request.model_name, request.model_version)
    array = input_array(request)
    parameters = parameter_values(request.parameters)
    samples = len(array) if array.ndim == len(sample_shape) + 1 else 1
    job_class, slo_ms = class_and_slo(parameters, samples)
    call = InferCall(
        request.model_name, job_class, slo_ms, inputs=array, **runner_options(parameters)
    )
    return V2Decoded(call, request.id or None, wanted_outputs(request))


def input_array(request: Any) -> np.ndarray:
    """The one input as a float32 array of its declared shape."""
    where = check_input(request.model_name, request.inputs)
    tensor = request.inputs[0]
    dims = check_shape(list(tensor.shape), f"{where}.shape")
    raw = request.raw_input_contents
    if raw:
        if tensor.HasField("contents"):
            raise InputError(where, "give either contents or raw_input_contents, not both")
        if len(raw) != 1:
            raise InputError("raw_input_contents", f"{len(raw)} entries for 1 input")
        return decode_raw(raw[0], dims, f"{where}.shape", "raw_input_contents[0]")
    values = tensor.contents.fp32_contents
    if not values:
        raise InputError(
            f"{where}.contents",
            "the input has neither contents.fp32_contents nor raw_input_contents",
        )
    count = math.prod(dims)
    if len(values) != count:
        raise InputError(
            f"{where}.contents.fp32_contents",
            f"fp32_contents has {len(values)} values; shape {list(dims)} needs {count}",
        )
    return np.asarray(values, dtype=np.float32).reshape(dims)


def wanted_outputs(request: Any) -> tuple[WantedOutput, ...]:
    """The outputs a request asks for (all raw bytes); none named: the logits."""
    if not request.outputs:
        return (WantedOutput(OUTPUT_NAME, True, 0),)
    wanted = []
    for i, out in enumerate(request.outputs):
        where = f"outputs.{i}"
        check_output_name(out.name, where)
        k = parameter_values(out.parameters).get("classification", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"{where}.parameters.classification", f"not a class count: {echo(k)}")
        wanted.append(WantedOutput(out.name, True, k))
    return tuple(wanted)


def encode_infer(decoded: V2Decoded, answer: Answer) -> Message:
    """The ModelInferResponse of an answer: its outputs as raw bytes, and what POST /infer
    reports beside them (class, SLO, timing, lane, ...) as response parameters."""
    response: Any = ModelInferResponse(
        model_name=answer.job.workload, model_version=MODEL_VERSION, id=decoded.request_id or ""
    )
    for key, value in answer_parameters(answer).items():
        if value is not None:
            set_parameter(response.parameters[key], value)
    for want in decoded.outputs:
        entry, blob = output_tensor(answer.outputs, want)
        assert blob is not None  # every gRPC output is wanted as bytes
        response.outputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
        response.raw_output_contents.append(blob)
    return response


def set_parameter(entry: Message, value: bool | int | float | str) -> None:
    """Set a KServe InferParameter to `value`. A float travels as Triton's double_param,
    which KServe's message carries as an unknown field and Triton's clients read."""
    if isinstance(value, bool):
        wide = WideInferParameter(bool_param=value)
    elif isinstance(value, int):
        wide = WideInferParameter(int64_param=value)
    elif isinstance(value, float):
        wide = WideInferParameter(double_param=value)
    else:
        wide = WideInferParameter(string_param=str(value))
    entry.MergeFromString(wide.SerializeToString())
