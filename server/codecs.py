"""Request tensors in, model outputs out: decoding, validation and encoding (pure numpy).

Three wire forms carry an input batch, and each decodes to one float32 array:

- JSON ``{"data": <base64>, "shape": [...], "dtype": "float32"}``: raw little-endian bytes;
- JSON nested lists of numbers (convenient, slow for big batches);
- a binary body: ``application/octet-stream`` with ``X-Shape``/``X-Dtype`` headers, or a
  ``.npy`` file (``application/x-npy``).

`conform_batch` then checks the array against the model's input shape and the per-request
sample limit and returns the C-contiguous, writable float32 batch a backend runs.

Non-finite inputs (NaN, ±inf) are rejected with a 4xx rather than run. Rows of a shared
micro-batch are independent, so a NaN would not poison other requests' outputs; but a
NaN input is almost always a client bug (a failed normalisation, a divide by zero), the
model would only return NaN scores for it, and keeping such requests out of the queue
keeps latency and SLO metrics about real work. The check is one vectorised pass.

Every problem raises `InputError`, whose `field` names the offending field or header and
whose message is one line a client can act on; the server maps it to a 4xx in one place.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from server.echo import echo
from server.wire_ints import parse_wire_int
from workloads.specs import WorkloadSpec

#: The only element type the gateway accepts on the wire.
ACCEPTED_DTYPES: tuple[str, ...] = ("float32",)
#: Little-endian float32: the byte order of the raw wire formats, whatever the host's.
_WIRE_F32 = np.dtype("<f4")
#: Media types of the binary body (parameters such as "; charset" are ignored).
OCTET_STREAM = "application/octet-stream"
NPY_TYPES: tuple[str, ...] = ("application/x-npy", "application/npy")
#: Rank limit of any input tensor (batch axis included).
MAX_DIMS = 8
#: Largest dimension (2**48): no valid body holds more, and products of larger ones
#: would be numbers too long to print in an error message.
MAX_DIM = 1 << 48


class InputError(ValueError):
    """Bad request input.

    `field` names the offending field ("inputs.shape", "X-Shape", "body"); ``str(e)`` is a
    one-line human message. `code` is the short error code the server reports.
    """

    code: str = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooLargeError(InputError):
    """The request carries more samples than one request may hold (HTTP 413)."""

    code = "too_large"


class OutputError(RuntimeError):
    """A model returned outputs that cannot be encoded (wrong rank, NaN or inf)."""


def _check_dtype(dtype: str | None, field: str) -> None:
    if dtype is None or dtype.strip().lower() in ACCEPTED_DTYPES:
        return
    raise InputError(
        field, f"dtype {echo(dtype)} is not supported; accepted: {', '.join(ACCEPTED_DTYPES)}"
    )


def check_shape(shape: Sequence[int], field: str) -> tuple[int, ...]:
    dims = tuple(shape)
    if not 1 <= len(dims) <= MAX_DIMS:
        raise InputError(field, f"shape must have 1 to {MAX_DIMS} dimensions, got {len(dims)}")
    # bool is an int subclass; a shape of [true, 3] is a client bug, not a 1.
    if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM for d in dims):
        raise InputError(
            field, f"shape must be positive integers up to {MAX_DIM}, got {echo(list(dims))}"
        )
    return dims


def decode_raw(raw: bytes, shape: Sequence[int], field: str, what: str = "the body") -> np.ndarray:
    """Raw little-endian float32 bytes as an array of `shape` (checked): the binary body of
    POST /infer, a KServe v2 binary input, a gRPC `raw_input_contents` entry."""
    return _from_wire_bytes(raw, check_shape(shape, field), field, what)


def _from_wire_bytes(raw: bytes, dims: tuple[int, ...], field: str, what: str) -> np.ndarray:
    expected = math.prod(dims) * _WIRE_F32.itemsize
    if len(raw) != expected:
        raise InputError(
            field,
            f"{what} has {len(raw)} bytes but shape {list(dims)} of float32 needs {expected}",
        )
    # Zero-copy and read-only; conform_batch makes the one writable, native-order copy.
    return np.frombuffer(raw, dtype=_WIRE_F32).reshape(dims)


def decode_b64_tensor(data: str, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
    """Decode base64 of little-endian raw float32 bytes into an array of `shape`.

    Raises InputError for a dtype other than float32 ("inputs.dtype"), a bad shape
    ("inputs.shape"), invalid base64 or a byte length that does not match the shape
    ("inputs.data").
    """
    _check_dtype(dtype, "inputs.dtype")
    dims = check_shape(shape, "inputs.shape")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        # ValueError: a str with non-ASCII characters cannot even be read as base64.
        raise InputError("inputs.data", f"inputs.data is not valid base64 ({exc})") from None
    return _from_wire_bytes(raw, dims, "inputs.data", "inputs.data")


def decode_nested_list(values: Any) -> np.ndarray:
    """Decode JSON nested lists of numbers into a float32 array.

    Ragged nesting, strings, booleans, nulls and objects raise InputError("inputs").
    """
    if not isinstance(values, list):
        raise InputError("inputs", f"inputs must be a nested list of numbers, got {echo(values)}")
    try:
        # No dtype here: numpy would turn "1.5" strings and booleans into numbers.
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        raise InputError(
            "inputs", "inputs is a ragged nested list; every row must have the same length"
        ) from None
    if array.dtype.kind not in "iuf":
        raise InputError(
            "inputs", f"inputs must contain only numbers (found {_kind_name(array.dtype)})"
        )
    # Values beyond the float32 range become inf here and are rejected by conform_batch.
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def _kind_name(dtype: np.dtype) -> str:
    names = {"b": "booleans", "U": "strings", "S": "bytes", "O": "nulls, objects or mixed types"}
    return names.get(dtype.kind, f"dtype {dtype}")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_shape_header(header: str | None) -> tuple[int, ...]:
    """Parse an ``X-Shape`` header such as "32,3,224,224" (spaces and brackets allowed)."""
    if header is None or not header.strip():
        raise InputError("X-Shape", "header X-Shape is required, e.g. 'X-Shape: 32,3,224,224'")
    text = header.strip().strip("()[]")
    parts = [parse_wire_int(part) for part in text.split(",") if part.strip()]
    dims = [d for d in parts if d is not None]
    if not dims or len(dims) != len(parts):
        raise InputError(
            "X-Shape",
            f"header X-Shape must be comma-separated positive integers like '32,3,224,224', "
            f"got {echo(header)}",
        )
    return check_shape(dims, "X-Shape")


def decode_binary(
    body: bytes, content_type: str, shape_header: str | None, dtype_header: str | None
) -> np.ndarray:
    """Decode a binary request body: raw octet-stream with X-Shape/X-Dtype, or a .npy file.

    Raises InputError naming "Content-Type", "X-Shape", "X-Dtype" or "body".
    """
    media = _media_type(content_type)
    if media == OCTET_STREAM:
        _check_dtype(dtype_header, "X-Dtype")
        dims = parse_shape_header(shape_header)
        return _from_wire_bytes(body, dims, "body", "body")
    if media in NPY_TYPES:
        return _decode_npy(body)
    accepted = ", ".join((OCTET_STREAM, *NPY_TYPES, "application/json"))
    raise InputError(
        "Content-Type", f"content type {echo(content_type)} is not supported; accepted: {accepted}"
    )


def _decode_npy(body: bytes) -> np.ndarray:
    """Read a .npy body by its header, checking dtype and size before touching the data.

    The header is parsed with numpy's own reader; reading it ourselves (instead of
    np.load) means a header that claims a huge shape is refused before any allocation,
    an object array is refused without unpickling, and the data is viewed, not copied.
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            # Version 3 exists only for structured dtypes with non-latin-1 names.
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise InputError("body", f"body is not a valid .npy file ({exc})") from None
    # Any byte order of float32 is float32; other types are refused, object arrays included.
    if dtype.kind != "f" or dtype.itemsize != 4:
        raise InputError(
            "body", f".npy array has dtype {dtype.str!r} ({dtype}); only float32 is accepted"
        )
    dims = check_shape(shape, "body")
    offset = stream.tell()
    expected = math.prod(dims) * 4
    if len(body) - offset != expected:
        raise InputError(
            "body",
            f".npy data has {len(body) - offset} bytes but shape {list(dims)} of float32 "
            f"needs {expected}",
        )
    flat = np.frombuffer(body, dtype=dtype, count=math.prod(dims), offset=offset)
    return flat.reshape(dims, order="F" if fortran else "C")


def _shape_text(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def conform_batch(array: np.ndarray, spec: WorkloadSpec, max_samples: int) -> np.ndarray:
    """Check a decoded array against the model and return the batch a backend runs.

    Accepts (N, *spec.input_shape), or one sample (*spec.input_shape) which gets a batch
    axis. Raises InputError for a wrong shape or a non-numeric dtype, TooLargeError (an
    InputError) for N > max_samples, and InputError("inputs") for NaN or inf values.
    Returns a C-contiguous, writable, native float32 array (one copy at most).
    """
    sample = tuple(spec.input_shape)
    if array.shape == sample:
        array = array[np.newaxis]
    elif array.ndim != len(sample) + 1 or array.shape[1:] != sample:
        raise InputError(
            "inputs.shape",
            f"expected shape {_shape_text(('N', *sample))} or {_shape_text(sample)} "
            f"for model {spec.name!r}, got {_shape_text(array.shape)}",
        )
    n = array.shape[0]
    if n < 1:
        raise InputError("inputs.shape", "inputs has 0 samples; send at least 1")
    if n > max_samples:
        raise TooLargeError(
            "inputs.shape",
            f"inputs has {n} samples; at most {max_samples} are accepted per request",
        )
    if array.dtype.kind not in "iuf":
        raise InputError("inputs.dtype", f"inputs must be float32, got {array.dtype}")
    # Native-order, aligned, writable float32 in C order: backends may hand it to torch
    # without a copy, and a read-only buffer (frombuffer over the body) would warn there.
    # Checked by hand: np.require does the same but is ~10x slower than one plain copy.
    flags = array.flags
    if (
        array.dtype == np.float32
        and array.dtype.isnative
        and flags.c_contiguous
        and flags.aligned
        and flags.writeable
    ):
        batch = array
    else:
        with np.errstate(over="ignore"):
            batch = np.array(array, dtype=np.float32, order="C")
    finite = np.isfinite(batch)
    if not finite.all():
        bad = finite.size - int(np.count_nonzero(finite))
        raise InputError(
            "inputs",
            f"inputs contain {bad} non-finite values (NaN or inf); send finite float32 values",
        )
    return batch


def synthesize(spec: WorkloadSpec, samples: int, seed: int | None = None) -> np.ndarray:
    """Random standard-normal float32 inputs (N, *input_shape), for requests with batch_size.

    Normal noise resembles normalised images closely enough that service time matches
    real inputs; `seed` makes it reproducible.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *spec.input_shape), dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row max so exp never overflows."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, logits) of each row's `k` highest logits, highest first; ties: lower index
    first; `k` clipped to the row width. The one top-k of every protocol (POST /infer's
    top_k probabilities, KServe v2 classification)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, rows.shape[1])
    # Stable sort of negated logits: deterministic order among ties.
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(rows, order, axis=1)


def encode_outputs(
    outputs: np.ndarray, mode: Literal["top_k", "logits"], k: int
) -> list[list[dict[str, Any]]] | list[list[float]]:
    """Encode a (N, ...) output batch as JSON-ready values, one entry per sample.

    top_k: ``[{"index": int, "score": float}, ...]`` by softmax probability, highest
    first (ties: lower index first); k is clipped to the output width. logits: each row
    flattened, as floats. The request core has checked the outputs (a batch axis, all
    finite); ValueError for k < 1.
    """
    rows = outputs.reshape(outputs.shape[0], -1)
    if mode == "logits":
        return rows.astype(np.float64).tolist()
    if mode != "top_k":
        raise ValueError(f"mode must be 'top_k' or 'logits', got {mode!r}")
    order, _ = top_k(rows, k)
    # Softmax is monotonic: the top logits are the top probabilities.
    scores = np.take_along_axis(softmax(rows), order, axis=1)
    return [
        [{"index": i, "score": s} for i, s in zip(idx_row, score_row, strict=True)]
        for idx_row, score_row in zip(order.tolist(), scores.tolist(), strict=True)
    ]
