"""The model repository extension over gRPC, driven by `tritonclient.grpc` model control
against a real gateway with bearer tokens: index, load of a user's ONNX file from the
model directory, ready, infer, unload while requests are in flight, path safety, the
operator's role, and a load whose call is cancelled (it still finishes)."""

from __future__ import annotations

import json
import os
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
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.gateway_fixtures import LiveServer, tiny_config, write_slow_onnx
from tests.onnx_models import write_mlp

#: Batch work with a generous budget: admission never refuses a slow model's request.
BATCH = {"class": "batch", "slo_ms": 60000}
POLL_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("repo-tokens")
    values = {role: secrets.token_urlsafe(32) for role in ("operations", "inference")}
    for role, value in values.items():
        (folder / role).write_text(value)
    return {"folder": str(folder), **values}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-repo")
    write_mlp(root / "mlp.onnx")
    write_slow_onnx(root / "slow.onnx", matmuls=4)
    return root


@pytest.fixture(scope="module")
def server(onnx_dir: Path, model_dir: Path, tokens: dict[str, str]) -> Iterator[LiveServer]:
    entries = [
        {"name": role, "roles": [role], "file": f"{tokens['folder']}/{role}"}
        for role in ("operations", "inference")
    ]
    config = tiny_config(onnx_dir, model_dir=str(model_dir), grpc_port=0, auth={"tokens": entries})
    with LiveServer(config) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


def bearer(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens[role]}"}


def config(**keys: Any) -> str:
    return json.dumps(keys)


def status_of(call: Callable[[], object]) -> tuple[str, str]:
    """The status code and message `call` ends with ("OK", "" if it succeeds)."""
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status()), exc.message() or ""
    return "OK", ""


def index(client: triton.InferenceServerClient, ops: dict[str, str]) -> dict[str, Any]:
    entries = client.get_model_repository_index(headers=ops, as_json=True).get("models", [])
    return {m["name"]: m for m in entries}


def poll(what: Callable[[], Any], until: Callable[[Any], bool]) -> Any:
    """`what()` until `until` holds of it (a test helper; the server never polls)."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    value = what()
    while not until(value):
        assert time.monotonic() < deadline, f"still {value!r} after {POLL_TIMEOUT_S} s"
        time.sleep(0.01)
        value = what()
    return value


def test_load_infer_and_index(client, tokens: dict[str, str]) -> None:
    ops, inference = bearer(tokens, "operations"), bearer(tokens, "inference")
    assert index(client, ops)["tiny"] == {"name": "tiny", "version": "1", "state": "READY"}
    assert "mlp" not in index(client, ops)
    client.load_model("mlp", headers=ops, config=config(onnx_file="mlp.onnx"))
    assert client.is_model_ready("mlp", headers=inference)
    x = triton.InferInput("input", [2, 8], "FP32")
    x.set_data_from_numpy(np.ones((2, 8), dtype=np.float32))
    out = client.infer("mlp", [x], parameters=BATCH, headers=inference).as_numpy("output")
    # All-ones weights: (8 + 1) per hidden unit, 16 of them summed.
    np.testing.assert_allclose(out, np.full((2, 4), 144.0))
    ready = client.get_model_repository_index(headers=ops, as_json=True)["models"]
    assert {"tiny", "mlp"} <= {m["name"] for m in ready if m["state"] == "READY"}


def test_only_the_operator_controls_models(client, tokens: dict[str, str]) -> None:
    for headers, code in (
        (None, "StatusCode.UNAUTHENTICATED"),
        (bearer(tokens, "inference"), "StatusCode.PERMISSION_DENIED"),
    ):
        for call in (
            lambda h=headers: client.get_model_repository_index(headers=h),
            lambda h=headers: client.load_model("mlp2", headers=h),
            lambda h=headers: client.unload_model("tiny", headers=h),
        ):
            assert status_of(call)[0] == code
    assert client.is_model_ready("tiny", headers=bearer(tokens, "inference"))


def test_unload_while_requests_are_in_flight_answers_every_one(
    client, server: LiveServer, tokens: dict[str, str]
) -> None:
    ops, inference = bearer(tokens, "operations"), bearer(tokens, "inference")
    client.load_model("slow", headers=ops, config=config(onnx_file="slow.onnx"))
    x = triton.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    answers: list[tuple[str, str]] = []
    lock = threading.Lock()

    def send() -> None:
        answer = status_of(lambda: client.infer("slow", [x], parameters=BATCH, headers=inference))
        with lock:
            answers.append(answer)

    first = [threading.Thread(target=send) for _ in range(6)]
    for t in first:
        t.start()
    lanes = f"{server.base_url}/v1/lanes"
    poll(
        lambda: httpx.get(lanes, headers=ops, timeout=5).json()["lanes"][0]["running"],
        lambda running: running is not None,
    )
    unloaded: list[tuple[str, str]] = []
    unloading = threading.Thread(
        target=lambda: unloaded.append(status_of(lambda: client.unload_model("slow", ops)))
    )
    unloading.start()
    late = [threading.Thread(target=send) for _ in range(4)]
    for t in late:
        t.start()
    for t in [*first, *late, unloading]:
        t.join(timeout=120)
    assert len(answers) == 10 and unloaded == [("OK", "")]  # every request answered
    assert [code for code, _ in answers].count("OK") >= 6, answers  # in flight before: served
    for code, message in answers:  # refused clearly: while its requests finish, or once gone
        assert (
            code == "OK"
            or (code == "StatusCode.UNAVAILABLE" and "unloading" in message)
            or code == "StatusCode.NOT_FOUND"
        ), (code, message)
    gone = status_of(lambda: client.is_model_ready("slow", headers=inference))
    assert gone[0] == "StatusCode.NOT_FOUND"  # as HTTP's 404 for a model not served
    entry = index(client, ops)["slow"]
    assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", "unloaded")


def test_a_path_outside_the_model_directory_is_refused_unread(
    client, model_dir: Path, tmp_path: Path, tokens: dict[str, str]
) -> None:
    ops = bearer(tokens, "operations")
    # A FIFO: reading one would block the gateway, so a prompt refusal shows nothing opened it.
    outside = tmp_path / "outside.onnx"
    os.mkfifo(outside)
    (model_dir / "link.onnx").symlink_to(outside)
    for path in (str(outside), "../" + outside.name, "link.onnx"):
        code, message = status_of(
            lambda p=path: client.load_model("x", headers=ops, config=config(onnx_file=p))
        )
        assert code == "StatusCode.INVALID_ARGUMENT", (path, message)
        assert "outside the model directory" in message, (path, message)
    upload = {"file:1/model.onnx": b"\x08\x09"}
    code, message = status_of(lambda: client.load_model("x", ops, "{}", upload))
    assert code == "StatusCode.INVALID_ARGUMENT" and "cannot be uploaded" in message
    code, message = status_of(lambda: client.load_model("x", ops, "{not json"))
    assert code == "StatusCode.INVALID_ARGUMENT" and "not JSON" in message
    code, message = status_of(lambda: client.unload_model("nosuch", ops))
    assert code == "StatusCode.NOT_FOUND" and "nosuch" in message
    assert "x" not in index(client, ops)


def test_a_load_whose_call_is_cancelled_still_finishes(
    client, server: LiveServer, tokens: dict[str, str]
) -> None:
    ops = bearer(tokens, "operations")
    request = service_pb2.RepositoryModelLoadRequest(model_name="slow2")
    request.parameters["config"].string_param = config(onnx_file="slow.onnx")
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.RepositoryModelLoad.future(request, metadata=tuple(ops.items()))
        state = poll(
            lambda: index(client, ops).get("slow2", {}).get("state"),
            lambda s: s == "LOADING" or call.done(),
        )
        cancelled = state == "LOADING" and call.cancel()
    assert cancelled or call.exception() is None  # (a load done first is not cancelled)
    poll(lambda: index(client, ops).get("slow2", {}).get("state"), lambda s: s == "READY")
    assert client.is_model_ready("slow2", headers=bearer(tokens, "inference"))
    client.unload_model("slow2", headers=ops)
    assert index(client, ops)["slow2"]["state"] == "UNAVAILABLE"
