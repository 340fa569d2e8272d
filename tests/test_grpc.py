"""KServe v2 over gRPC, driven by NVIDIA's own client (tritonclient.grpc).

One in-process gateway serving `tiny`, HTTP and gRPC on their own ports. Its batch
class holds jobs for a long micro-batching window, so a batch request stays queued
until a test cancels it; inference tests ask for the interactive class (Triton's
priority 1), which is never held. Answers are checked against POST /infer on the
same input; errors against the status codes server/grpc_v2/status.py promises.
A second gateway with bearer tokens checks access control.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server.grpc_v2.codec import parameter_values
from server.grpc_v2.messages import ModelInferRequest
from tests.gateway_fixtures import LiveServer, tiny_config

#: Batch jobs wait this long for companions: a queued batch request stays queued.
WINDOW_MS = 120_000.0
POLL_TIMEOUT_S = 30.0
#: Messages over this many MiB are refused, as HTTP bodies are.
MAX_BODY_MB = 0.5
#: The default admission, but idle interactive lanes admit a late job as a probe of
#: their speed only once (their first job), not again after a second of idling.
ADMISSION = {
    "interactive": {"refuse_late": True, "shed_late": True, "margin_ms": 5.0, "probe_s": 3600},
    "batch": {},
}


@pytest.fixture(scope="module")
def server(onnx_dir: Path) -> Iterator[LiveServer]:
    config = tiny_config(
        onnx_dir,
        grpc_port=0,
        max_body_mb=MAX_BODY_MB,
        scheduler={"microbatch": {"window_ms": WINDOW_MS, "max_batch": 64}, "admission": ADMISSION},
    )
    with LiveServer(config) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def input_of(x: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def http_logits(http: httpx.Client, x: np.ndarray) -> np.ndarray:
    body = {"model": "tiny", "class": "interactive", "inputs": x.tolist(), "return": "logits"}
    r = http.post("/infer", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json()["outputs"], dtype=np.float32)


def status_of(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


def poll(what: Callable[[], Any], until: Callable[[Any], bool]) -> Any:
    """`what()` until `until` holds of it (a test helper; the server never polls)."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    value = what()
    while not until(value):
        assert time.monotonic() < deadline, f"still {value!r} after {POLL_TIMEOUT_S} s"
        time.sleep(0.02)
        value = what()
    return value


# ------------------------------------------------------------------ health, metadata
def tensors(entries: Any, shape: str) -> list[tuple[Any, ...]]:
    """(name, type, shape) of metadata or config tensors, as protobuf or JSON has them."""
    if entries and isinstance(entries[0], dict):
        return [(t["name"], t.get("datatype", t.get("data_type")), t[shape]) for t in entries]
    return [(t.name, t.datatype, list(t.shape)) for t in entries]


def test_health_and_metadata_match_http(client, http: httpx.Client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    meta, expected = client.get_model_metadata("tiny"), http.get("/v2/models/tiny").json()
    assert (meta.name, list(meta.versions), meta.platform) == (
        expected["name"],
        expected["versions"],
        expected["platform"],
    )
    assert tensors(meta.inputs, "shape") == tensors(expected["inputs"], "shape")
    assert tensors(meta.outputs, "shape") == tensors(expected["outputs"], "shape")
    server = client.get_server_metadata()
    assert [server.name, server.version, list(server.extensions)] == list(
        http.get("/v2").json().values()
    )


def test_model_config_matches_http(client, http: httpx.Client) -> None:
    config = client.get_model_config("tiny").config
    expected = http.get("/v2/models/tiny/config").json()
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        expected["name"],
        expected["platform"],
        expected["backend"],
        expected["max_batch_size"],
    )
    for kind in ("input", "output"):
        typed = [
            (t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims))
            for t in getattr(config, kind)
        ]
        assert typed == tensors(expected[kind], "dims")


def test_the_port_is_reported(server: LiveServer, http: httpx.Client) -> None:
    assert http.get("/v1/models").json()["grpc_port"] == server.grpc_port


# ------------------------------------------------------------------ inference
def test_infer_matches_post_infer(client, http: httpx.Client) -> None:
    x = images(3, seed=7)
    result = client.infer("tiny", [input_of(x)], priority=1)  # 1: interactive
    logits = result.as_numpy("output")
    expected = http_logits(http, x)
    assert logits.dtype == np.float32 and logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert logits.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    params = result.get_response(as_json=True)["parameters"]
    assert params["class"]["string_param"] == "interactive"
    assert params["batch_size"]["int64_param"] == "3"  # JSON writes an int64 as a string


def test_classification_output(client, http: httpx.Client) -> None:
    x = images(2, seed=3)
    wanted = [triton.InferRequestedOutput("output", class_count=3)]
    result = client.infer(
        "tiny", [input_of(x)], outputs=wanted, parameters={"class": "interactive"}
    )
    labels = result.as_numpy("output")
    assert labels.shape == (2, 3)
    top = [[int(s.decode().split(":")[1]) for s in row] for row in labels]
    expected = http_logits(http, x)
    assert top == np.argsort(-expected, axis=1, kind="stable")[:, :3].tolist()


def test_typed_contents_answer_as_raw_bytes_do(server: LiveServer, http: httpx.Client) -> None:
    x = images(2, seed=5)
    request = service_pb2.ModelInferRequest(model_name="tiny")
    request.parameters["class"].string_param = "interactive"
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    (output,) = response.outputs
    assert output.datatype == "FP32" and list(output.shape) == [2, 10]
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(logits, http_logits(http, x), rtol=1e-5, atol=1e-5)


def test_triton_parameters_are_read_as_http_reads_them() -> None:
    """Triton's client sends priority as uint64 and float parameters as double: fields
    KServe's InferParameter lacks, read through Triton's wider message."""
    sent = service_pb2.ModelInferRequest(model_name="tiny")
    sent.parameters["priority"].uint64_param = 2
    sent.parameters["slo_ms"].double_param = 250.5
    sent.parameters["timeout"].int64_param = 1000
    sent.parameters["class"].string_param = "batch"
    sent.parameters["flag"].bool_param = True
    received: Any = ModelInferRequest.FromString(sent.SerializeToString())
    assert parameter_values(received.parameters) == {
        "priority": 2,
        "slo_ms": 250.5,
        "timeout": 1000,
        "class": "batch",
        "flag": True,
    }


def test_a_tight_timeout_is_refused_at_once(server: LiveServer, client) -> None:
    """timeout=1 µs: admission predicts the job late and refuses it (429's code), with
    when to retry in the trailing metadata, as HTTP's Retry-After."""
    late = []
    with pytest.raises(InferenceServerException) as refused:
        for _ in range(2):  # lanes that never ran admit one probe (ADMISSION)
            late.append(client.infer("tiny", [input_of(images(1))], timeout=1))  # µs
    assert status_of(refused) == "StatusCode.RESOURCE_EXHAUSTED", refused.value.message()
    for probe in late:
        assert not probe.get_response(as_json=True)["parameters"]["slo_met"]["bool_param"]
    # The same call on the raw stub, whose error has the trailing metadata.
    request = service_pb2.ModelInferRequest(model_name="tiny")
    request.parameters["timeout"].int64_param = 1  # Triton's unit: µs
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    request.raw_input_contents.append(images(1).tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=60)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "deadline" in error.details()
    assert int(dict(error.trailing_metadata())["retry-after"]) >= 1


class HeldCall:
    """A batch request held in the queue for its micro-batching window, and its answer."""

    def __init__(self, client: triton.InferenceServerClient, http: httpx.Client) -> None:
        self.http = http
        self.answered = threading.Event()
        self.errors: list[Any] = []
        held = {"class": "batch", "slo_ms": 600_000}  # held for its window, never late
        self.call = client.async_infer("tiny", [input_of(images(2))], self._done, parameters=held)
        poll(self.batch_stats, lambda s: s[0] == 1)  # queued, waiting for companions

    def batch_stats(self) -> tuple[int, int]:
        """(queued batch jobs, batch jobs cancelled so far)."""
        stats = self.http.get("/stats").json()
        return stats["queue_depth"]["batch"], stats["classes"]["batch"]["outcomes"]["cancelled"]

    def _done(self, result: Any, error: Any) -> None:
        self.errors.append(error)
        self.answered.set()

    def status(self) -> str:
        """The status code the call ended with (it must have ended in an error)."""
        assert self.answered.wait(POLL_TIMEOUT_S), "the call was never answered"
        (error,) = self.errors
        assert error is not None
        return str(error.status())


def test_a_cancelled_call_leaves_the_queue(client, http: httpx.Client) -> None:
    cancelled = http.get("/stats").json()["classes"]["batch"]["outcomes"]["cancelled"]
    held = HeldCall(client, http)
    held.call.cancel()
    assert poll(held.batch_stats, lambda s: s[1] == cancelled + 1) == (0, cancelled + 1)
    assert held.status() == "StatusCode.CANCELLED"


def test_shutdown_answers_a_queued_call(onnx_dir: Path) -> None:
    """Every accepted call gets one answer: stopping the gateway answers a queued one."""
    config = tiny_config(onnx_dir, grpc_port=0, scheduler={"microbatch": {"window_ms": WINDOW_MS}})
    with LiveServer(config) as live, live.client() as http:
        client = triton.InferenceServerClient(url=live.grpc_url)
        try:
            held = HeldCall(client, http)
        except BaseException:
            client.close()
            raise
    try:  # the gateway has stopped: the call has its answer
        assert held.status() == "StatusCode.UNAVAILABLE"
        assert "shutting down" in str(held.errors[0].message())
    finally:
        client.close()


def test_messages_over_max_body_mb_are_refused(client) -> None:
    x = np.zeros((48, 3, 32, 32), np.float32)  # 576 KiB of raw input, over MAX_BODY_MB
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [input_of(x)], priority=1)
    assert status_of(info) == "StatusCode.RESOURCE_EXHAUSTED", info.value.message()


# ------------------------------------------------------------------ errors
def test_unknown_model_is_not_found(client) -> None:
    for call in (
        lambda: client.infer("nope", [input_of(images(1))]),
        lambda: client.get_model_metadata("nope"),
        lambda: client.is_model_ready("nope"),
        lambda: client.get_model_config("nope"),
        lambda: client.get_model_metadata("tiny", model_version="2"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert status_of(info) == "StatusCode.NOT_FOUND", info.value.message()


@pytest.mark.parametrize(
    ("x", "name", "words"),
    [
        (np.zeros((2, 3), np.float32), "input", "shape"),
        (np.full((1, 3, 32, 32), np.nan, np.float32), "input", "finite"),
        (images(1), "pixels", "takes one input 'input'"),
    ],
    ids=["wrong-shape", "nan", "wrong-name"],
)
def test_bad_input_is_invalid_argument(client, x: np.ndarray, name: str, words: str) -> None:
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [tensor], priority=1)
    assert status_of(info) == "StatusCode.INVALID_ARGUMENT"
    assert words in str(info.value.message()), info.value.message()


def test_unknown_backend_is_invalid_argument(client) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [input_of(images(1))], parameters={"backend": "tensorrt"})
    assert status_of(info) == "StatusCode.INVALID_ARGUMENT"
    assert "tensorrt" in str(info.value.message())


# ------------------------------------------------------------------ access control
@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("grpc-tokens")
    tokens = {"inference": secrets.token_urlsafe(32), "metrics": secrets.token_urlsafe(32)}
    for role, value in tokens.items():
        (folder / role).write_text(value)
    return {"folder": str(folder), **tokens}


@pytest.fixture(scope="module")
def guarded(onnx_dir: Path, token: dict[str, str]) -> Iterator[LiveServer]:
    entries = [
        {"name": role, "roles": [role], "file": f"{token['folder']}/{role}"}
        for role in ("inference", "metrics")
    ]
    with LiveServer(tiny_config(onnx_dir, grpc_port=0, auth={"tokens": entries})) as live:
        yield live


def test_tokens_guard_grpc_as_they_guard_http(guarded: LiveServer, token: dict[str, str]) -> None:
    client = triton.InferenceServerClient(url=guarded.grpc_url)
    try:
        assert client.is_server_live() and client.is_server_ready()  # open, as HTTP's probes
        for headers, code in (
            (None, "StatusCode.UNAUTHENTICATED"),
            ({"authorization": "Bearer not-a-token-at-all"}, "StatusCode.UNAUTHENTICATED"),
            ({"authorization": f"Bearer {token['metrics']}"}, "StatusCode.PERMISSION_DENIED"),
        ):
            for call in (
                lambda h=headers: client.get_model_metadata("tiny", headers=h),
                lambda h=headers: client.infer("tiny", [input_of(images(1))], headers=h),
            ):
                with pytest.raises(InferenceServerException) as info:
                    call()
                assert status_of(info) == code, info.value.message()
        good = {"authorization": f"Bearer {token['inference']}"}
        assert client.get_model_metadata("tiny", headers=good, as_json=True)["name"] == "tiny"
        assert client.infer("tiny", [input_of(images(1))], headers=good).as_numpy("output").shape
    finally:
        client.close()
