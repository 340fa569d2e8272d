"""Tests for server.codecs: every wire form round-trips, every bad input names its field."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest

from server.codecs import (
    InputError,
    OutputError,
    TooLargeError,
    conform_batch,
    decode_b64_tensor,
    decode_binary,
    decode_nested_list,
    encode_outputs,
    parse_shape_header,
    softmax,
    synthesize,
    top_k,
)
from server.request_core import check_outputs
from workloads.specs import RESNET18, TINY

TINY_BATCH = (2, 3, 32, 32)


def make_batch(shape: tuple[int, ...] = TINY_BATCH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def b64(array: np.ndarray) -> str:
    return base64.b64encode(array.astype("<f4").tobytes()).decode("ascii")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def check(exc: pytest.ExceptionInfo[InputError], field: str, *words: str) -> None:
    assert exc.value.field == field
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --- base64 ---------------------------------------------------------------------------


def test_b64_round_trip() -> None:
    x = make_batch()
    y = decode_b64_tensor(b64(x), list(x.shape))
    np.testing.assert_array_equal(y, x)
    assert y.dtype == np.float32


def test_b64_invalid_base64() -> None:
    with pytest.raises(InputError) as exc:
        decode_b64_tensor("not base64!!", [1])
    check(exc, "inputs.data", "not valid base64")


def test_b64_non_ascii_is_invalid_base64() -> None:
    with pytest.raises(InputError) as exc:
        decode_b64_tensor("ééé=", [1])
    check(exc, "inputs.data", "not valid base64")


def test_b64_wrong_byte_length() -> None:
    data = b64(make_batch((1, 3, 32, 32)))
    with pytest.raises(InputError) as exc:
        decode_b64_tensor(data, [2, 3, 32, 32])
    check(exc, "inputs.data", "12288 bytes", "24576")


@pytest.mark.parametrize("dtype", ["float64", "int8"])
def test_b64_wrong_dtype(dtype: str) -> None:
    with pytest.raises(InputError) as exc:
        decode_b64_tensor(b64(make_batch()), list(TINY_BATCH), dtype=dtype)
    check(exc, "inputs.dtype", dtype, "float32")


@pytest.mark.parametrize("shape", [[], [0, 3], [1] * 9, [2, -1]])
def test_b64_bad_shape(shape: list[int]) -> None:
    with pytest.raises(InputError) as exc:
        decode_b64_tensor("", shape)
    assert exc.value.field == "inputs.shape"


# --- nested lists ---------------------------------------------------------------------


def test_nested_list_round_trip_is_float32() -> None:
    x = make_batch((1, 3, 4, 4))
    y = decode_nested_list(x.tolist())
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    assert decode_nested_list([[1, 2], [3, 4]]).dtype == np.float32


@pytest.mark.parametrize(
    ("values", "word"),
    [
        ([[1.0, 2.0], [3.0]], "ragged"),
        ([1.0, "2.0"], "strings"),
        ([1.0, None], "nulls"),
        ([True, False], "booleans"),
        ([{"a": 1}], "objects"),
        (3.0, "nested list"),
    ],
)
def test_nested_list_rejects(values: object, word: str) -> None:
    with pytest.raises(InputError) as exc:
        decode_nested_list(values)
    check(exc, "inputs", word)


# --- binary bodies --------------------------------------------------------------------


def test_octet_stream_round_trip() -> None:
    x = make_batch()
    y = decode_binary(x.tobytes(), "application/octet-stream", "2, 3, 32, 32", None)
    np.testing.assert_array_equal(y, x)
    y = decode_binary(x.tobytes(), "Application/Octet-Stream; q=1", "(2,3,32,32)", "float32")
    np.testing.assert_array_equal(y, x)


def test_octet_stream_missing_shape() -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(b"\0" * 4, "application/octet-stream", None, None)
    check(exc, "X-Shape", "required")


@pytest.mark.parametrize("header", ["a,b", "", "3,,x", "2.5,3"])
def test_octet_stream_malformed_shape(header: str) -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(b"\0" * 4, "application/octet-stream", header, None)
    assert exc.value.field == "X-Shape"


def test_shape_header_rejects_zero() -> None:
    with pytest.raises(InputError) as exc:
        parse_shape_header("0,3")
    check(exc, "X-Shape", "positive")
    assert parse_shape_header(" 32,3,224,224 ") == (32, 3, 224, 224)


@pytest.mark.parametrize("dtype", ["float64", "int8"])
def test_octet_stream_wrong_dtype(dtype: str) -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(make_batch().tobytes(), "application/octet-stream", "2,3,32,32", dtype)
    check(exc, "X-Dtype", dtype, "float32")


def test_octet_stream_short_body() -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(b"\0" * 10, "application/octet-stream", "2,3,32,32", None)
    check(exc, "body", "10 bytes", "24576")


def test_unsupported_content_type() -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(b"", "text/plain", None, None)
    check(exc, "Content-Type", "text/plain", "application/x-npy")


@pytest.mark.parametrize("content_type", ["application/x-npy", "application/npy"])
def test_npy_round_trip(content_type: str) -> None:
    x = make_batch()
    np.testing.assert_array_equal(decode_binary(npy_bytes(x), content_type, None, None), x)


def test_npy_fortran_order_and_big_endian_are_accepted() -> None:
    x = make_batch()
    for variant in (np.asfortranarray(x), x.astype(">f4")):
        y = decode_binary(npy_bytes(variant), "application/x-npy", None, None)
        np.testing.assert_array_equal(y, x)
        batch = conform_batch(y, TINY, 8)
        assert batch.flags.c_contiguous and batch.dtype == np.dtype("=f4")


def test_npy_float64_rejected() -> None:
    with pytest.raises(InputError) as exc:
        decode_binary(npy_bytes(make_batch().astype(np.float64)), "application/x-npy", None, None)
    check(exc, "body", "float64", "float32")


def test_npy_object_array_refused_without_unpickling() -> None:
    body = npy_bytes(np.array([{"evil": 1}, None], dtype=object))
    with pytest.raises(InputError) as exc:
        decode_binary(body, "application/x-npy", None, None)
    check(exc, "body", "object", "float32")


def test_npy_truncated_and_garbage() -> None:
    body = npy_bytes(make_batch())
    with pytest.raises(InputError) as exc:
        decode_binary(body[:-4], "application/x-npy", None, None)
    check(exc, "body", "bytes")
    with pytest.raises(InputError) as exc:
        decode_binary(b"PK\x03\x04 zip", "application/x-npy", None, None)
    check(exc, "body", "not a valid .npy")


def test_npy_huge_claimed_shape_is_refused_before_allocation() -> None:
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_1_0(buf, header)
    with pytest.raises(InputError) as exc:
        decode_binary(buf.getvalue() + b"\0" * 4, "application/x-npy", None, None)
    check(exc, "body", "4 bytes", "4000000000000")


# --- conform_batch --------------------------------------------------------------------


def test_conform_adds_batch_axis_to_single_sample() -> None:
    x = make_batch((3, 32, 32))
    batch = conform_batch(x, TINY, 8)
    assert batch.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(batch[0], x)


def test_conform_returns_writable_contiguous_float32() -> None:
    x = make_batch()
    frozen = decode_b64_tensor(b64(x), list(x.shape))
    assert not frozen.flags.writeable
    batch = conform_batch(frozen, TINY, 8)
    assert batch.flags.writeable and batch.flags.c_contiguous and batch.dtype == np.float32
    ok = np.ascontiguousarray(x)
    assert conform_batch(ok, TINY, 8) is ok  # already conforming: no copy


def test_conform_converts_float64() -> None:
    batch = conform_batch(make_batch().astype(np.float64), TINY, 8)
    assert batch.dtype == np.float32


def test_conform_wrong_shape_message() -> None:
    with pytest.raises(InputError) as exc:
        conform_batch(make_batch(TINY_BATCH), RESNET18, 32)
    check(
        exc,
        "inputs.shape",
        "expected shape (N, 3, 224, 224) or (3, 224, 224) for model 'resnet18', got (2, 3, 32, 32)",
    )


def test_conform_too_many_samples() -> None:
    with pytest.raises(TooLargeError) as exc:
        conform_batch(make_batch((5, 3, 32, 32)), TINY, 4)
    check(exc, "inputs.shape", "5 samples", "at most 4")
    assert exc.value.code == "too_large"


def test_conform_zero_samples() -> None:
    with pytest.raises(InputError) as exc:
        conform_batch(np.zeros((0, 3, 32, 32), np.float32), TINY, 4)
    check(exc, "inputs.shape", "0 samples")


def test_conform_non_finite_rejected() -> None:
    x = make_batch()
    x[0, 0, 0, :2] = np.nan
    x[1, 2, 3, 4] = -np.inf
    with pytest.raises(InputError) as exc:
        conform_batch(x, TINY, 8)
    check(exc, "inputs", "3 non-finite values (NaN or inf)")
    assert exc.value.code == "invalid_input"


def test_conform_float64_overflow_is_non_finite() -> None:
    x = make_batch().astype(np.float64)
    x[0, 0, 0, 0] = 1e300
    with pytest.raises(InputError) as exc:
        conform_batch(decode_nested_list(x.tolist()), TINY, 8)
    check(exc, "inputs", "1 non-finite")


def test_conform_is_fast_for_a_resnet_batch() -> None:
    x = make_batch((32, 3, 224, 224))
    body = x.tobytes()
    conform_batch(
        decode_binary(body, "application/octet-stream", "32,3,224,224", None), RESNET18, 32
    )
    start = time.perf_counter()
    for _ in range(5):
        raw = decode_binary(body, "application/octet-stream", "32,3,224,224", None)
        conform_batch(raw, RESNET18, 32)
    # ~5 ms each on a laptop (one copy + one isfinite pass); generous for shared CI.
    assert (time.perf_counter() - start) / 5 < 0.1


# --- synthesize / encode --------------------------------------------------------------


def test_synthesize_shape_dtype_and_seed() -> None:
    a = synthesize(TINY, 3, seed=1)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, synthesize(TINY, 3, seed=1))
    conform_batch(a, TINY, 3)
    with pytest.raises(ValueError):
        synthesize(TINY, 0)


def test_top_k_order_and_softmax() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, -1.0]], np.float32)
    out = encode_outputs(logits, "top_k", 2)
    assert [[e["index"] for e in row] for row in out] == [[1, 2], [2, 0]]
    full = encode_outputs(logits, "top_k", 100)  # k clipped to the width
    for row in full:
        assert len(row) == 4
        scores = [e["score"] for e in row]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-9)
        assert all(isinstance(e["index"], int) and isinstance(e["score"], float) for e in row)
    # Ties: lower index first.
    assert full[1][1]["index"] == 0 and full[1][2]["index"] == 1


def test_softmax_is_stable_for_huge_logits() -> None:
    p = softmax(np.array([[1e4, 1e4 - 1.0, -1e4]], np.float32))
    assert np.isfinite(p).all()
    assert p.sum() == pytest.approx(1.0)


def test_logits_passthrough() -> None:
    logits = make_batch((2, 10))
    out = encode_outputs(logits, "logits", 5)
    assert len(out) == 2 and len(out[0]) == 10
    np.testing.assert_array_equal(np.array(out, np.float32), logits)


def test_the_core_rejects_outputs_no_protocol_can_carry() -> None:
    with pytest.raises(OutputError):
        check_outputs(np.array([1.0, np.nan]).reshape(1, 2))
    with pytest.raises(OutputError):
        check_outputs(np.zeros(3))
    check_outputs(np.zeros((1, 3)))
    with pytest.raises(ValueError):
        encode_outputs(np.zeros((1, 3)), "top_k", 0)


def test_one_top_k_for_every_protocol() -> None:
    rows = np.array([[0.5, 2.0, 2.0, -1.0]], np.float32)
    order, values = top_k(rows, 3)
    assert order.tolist() == [[1, 2, 0]]  # ties: lower index first
    assert values.tolist() == [[2.0, 2.0, 0.5]]
    assert top_k(rows, 10)[0].shape == (1, 4)  # k clipped to the width
    probs = encode_outputs(rows, "top_k", 3)
    assert [e["index"] for e in probs[0]] == order[0].tolist()
