"""The model repository extension against a real gateway: `tritonclient.http` model
control (index, load of a user's ONNX file from the model directory, ready, infer,
unload while requests are in flight), path safety, failed loads, and process lanes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.gateway_fixtures import LiveServer, tiny_config, wait_busy, write_slow_onnx
from tests.onnx_models import write_mlp, write_unloadable

#: Batch work with a generous budget: admission never refuses a slow model's request.
BATCH = {"class": "batch", "slo_ms": 60000}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_mlp(root / "mlp.onnx")
    write_slow_onnx(root / "slow.onnx", matmuls=4)
    write_unloadable(root / "bad.onnx")
    return root


@pytest.fixture(scope="module")
def server(onnx_dir: Path, model_dir: Path) -> Iterator[LiveServer]:
    with LiveServer(tiny_config(onnx_dir, model_dir=str(model_dir))) as live:
        yield live


@pytest.fixture()
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.base_url.removeprefix("http://"))
    yield c
    c.close()


def config(**keys: Any) -> str:
    return json.dumps(keys)


def v2_infer(base_url: str, name: str, rows: np.ndarray) -> httpx.Response:
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ],
        "parameters": BATCH,
    }
    return httpx.post(f"{base_url}/v2/models/{name}/infer", json=body, timeout=120)


def test_load_infer_and_index_with_tritonclient(
    client: triton.InferenceServerClient, server: LiveServer
) -> None:
    index = client.get_model_repository_index()
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index
    assert not client.is_model_ready("mlp")
    client.load_model("mlp", config=config(onnx_file="mlp.onnx"))
    assert client.is_model_ready("mlp")
    x = triton.InferInput("input", [2, 8], "FP32")
    x.set_data_from_numpy(np.ones((2, 8), dtype=np.float32))
    out = client.infer("mlp", [x], parameters=BATCH).as_numpy("output")
    # All-ones weights: (8 + 1) per hidden unit, 16 of them summed.
    np.testing.assert_allclose(out, np.full((2, 4), 144.0))
    r = httpx.post(f"{server.base_url}/v2/repository/index", json={"ready": True})
    ready = {m["name"] for m in r.json()}
    assert {"tiny", "mlp"} <= ready
    models = httpx.get(f"{server.base_url}/v1/models").json()["models"]
    assert "mlp" in [m["name"] for m in models]


def test_unload_while_requests_are_in_flight_answers_every_one(
    client: triton.InferenceServerClient, server: LiveServer
) -> None:
    client.load_model("slow", config=config(onnx_file="slow.onnx"))
    rows = np.ones((1, 4), dtype=np.float32)
    statuses: list[int] = []
    bodies: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        r = v2_infer(server.base_url, "slow", rows)
        with lock:
            statuses.append(r.status_code)
            bodies.append(r.text)

    first = [threading.Thread(target=send) for _ in range(6)]
    for t in first:
        t.start()
    wait_busy(server.base_url)
    unloaded: list[int] = []

    def unload() -> None:  # tritonclient.http's gevent client stays on its own thread
        url = f"{server.base_url}/v2/repository/models/slow/unload"
        unloaded.append(httpx.post(url, timeout=120).status_code)

    unloading = threading.Thread(target=unload)
    unloading.start()
    late = [threading.Thread(target=send) for _ in range(4)]
    for t in late:
        t.start()
    for t in [*first, *late, unloading]:
        t.join(timeout=120)
    assert len(statuses) == 10 and unloaded == [200]  # every request answered
    assert statuses.count(200) >= 6, bodies  # the ones in flight before the unload finished
    for status, body in zip(statuses, bodies, strict=True):
        # Refused clearly: while its requests finish, or once it is gone.
        assert status == 200 or (status == 503 and "unloading" in body) or status == 404, body
    assert not client.is_model_ready("slow")
    assert v2_infer(server.base_url, "slow", rows).status_code == 404
    entry = next(m for m in client.get_model_repository_index() if m["name"] == "slow")
    assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", "unloaded")


def test_a_path_outside_the_model_directory_is_refused_unread(
    server: LiveServer, model_dir: Path, tmp_path: Path
) -> None:
    # FIFOs: reading one would block the gateway, so a prompt 400 shows nothing opened it.
    outside = tmp_path / "outside.onnx"
    os.mkfifo(outside)
    inside_fifo = model_dir / "fifo.onnx"
    os.mkfifo(inside_fifo)
    link = model_dir / "link.onnx"
    link.symlink_to(outside)
    cases = {
        str(outside): "outside the model directory",
        "../" + outside.name: "outside the model directory",
        "link.onnx": "outside the model directory",
        "fifo.onnx": "not a regular file",
        "missing.onnx": "No such file",
    }
    for path, why in cases.items():
        body = {"parameters": {"config": config(onnx_file=path)}}
        r = httpx.post(f"{server.base_url}/v2/repository/models/x/load", json=body, timeout=10)
        assert r.status_code == 400 and why in r.json()["error"], (path, r.text)
    names = [m["name"] for m in httpx.post(f"{server.base_url}/v2/repository/index").json()]
    assert "x" not in names


def test_bad_configs_and_failed_loads_say_why(
    client: triton.InferenceServerClient, server: LiveServer
) -> None:
    url = f"{server.base_url}/v2/repository/models"
    r = httpx.post(f"{url}/m/load", json={"parameters": {"config": config(max_batch_size=8)}})
    assert r.status_code == 400 and "max_batch_size" in r.json()["error"]
    r = httpx.post(f"{url}/m/load", json={"parameters": {"config": "{not json"}})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = httpx.post(f"{url}/nosuch/unload")
    assert r.status_code == 404 and "nosuch" in r.json()["error"]
    with pytest.raises(InferenceServerException, match="failed to load model 'bad'"):
        client.load_model("bad", config=config(onnx_file="bad.onnx"))
    entry = next(m for m in client.get_model_repository_index() if m["name"] == "bad")
    assert entry["state"] == "UNAVAILABLE" and "Frobnicate" in entry["reason"]
    # A failed replace leaves the old version serving.
    with pytest.raises(InferenceServerException, match="old version keeps serving"):
        client.load_model("mlp", config=config(onnx_file="bad.onnx"))
    assert client.is_model_ready("mlp")
    assert v2_infer(server.base_url, "mlp", np.ones((1, 8), dtype=np.float32)).status_code == 200


def test_process_lanes_load_and_unload(onnx_dir: Path, model_dir: Path) -> None:
    lanes = {"count": 2, "kind": "process", "threads_per_lane": 1}
    with LiveServer(tiny_config(onnx_dir, model_dir=str(model_dir), lanes=lanes)) as live:
        c = triton.InferenceServerClient(live.base_url.removeprefix("http://"))
        try:
            c.load_model("mlp", config=config(onnx_file="mlp.onnx"))
            assert c.is_model_ready("mlp")
            r = v2_infer(live.base_url, "mlp", np.ones((3, 8), dtype=np.float32))
            assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [3, 4]
            c.unload_model("mlp")
            assert not c.is_model_ready("mlp")
            lanes_now = httpx.get(f"{live.base_url}/v1/lanes").json()["lanes"]
            assert all(row["ready"] for row in lanes_now)
        finally:
            c.close()


def test_the_command_line_loads_lists_and_unloads(server: LiveServer) -> None:
    def mlws(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mlws", "repository", *args, "--url", server.base_url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    loaded = mlws("load", "mlp2", "--config", config(onnx_file="mlp.onnx"))
    assert loaded.returncode == 0 and loaded.stdout.strip() == "loaded mlp2", loaded.stderr
    index = mlws("index", "--ready")
    assert index.returncode == 0 and "mlp2" in index.stdout and "READY" in index.stdout
    assert mlws("unload", "mlp2").returncode == 0
    listed = mlws("index").stdout
    assert any(line.split()[:2] == ["mlp2", "UNAVAILABLE"] for line in listed.splitlines())
    refused = mlws("load", "x", "--config", config(onnx_file="/etc/passwd"))
    assert refused.returncode == 1 and "outside the model directory" in refused.stderr


def test_a_model_loading_is_not_ready_and_its_requests_get_503(server: LiveServer) -> None:
    url = f"{server.base_url}/v2/repository/models/slow2/load"
    body = {"parameters": {"config": config(onnx_file="slow.onnx")}}
    answers: list[int] = []

    def load() -> None:
        answers.append(httpx.post(url, json=body, timeout=120).status_code)

    def state() -> str | None:
        index = httpx.post(f"{server.base_url}/v2/repository/index").json()
        return next((m["state"] for m in index if m["name"] == "slow2"), None)

    loading = threading.Thread(target=load)
    loading.start()
    try:
        deadline = time.monotonic() + 60
        while not answers and state() != "LOADING" and time.monotonic() < deadline:
            time.sleep(0.005)
        seen = not answers  # LOADING seen while the load was still going
        r = v2_infer(server.base_url, "slow2", np.ones((1, 4), dtype=np.float32))
        ready = httpx.get(f"{server.base_url}/v2/models/slow2/ready").status_code
        if r.status_code != 200:  # 200 only if the load finished in between
            assert r.status_code == 503 and "slow2" in r.text and "loading" in r.text, r.text
            assert ready == 400
    finally:
        loading.join(timeout=120)
    assert answers == [200] and seen
    assert httpx.get(f"{server.base_url}/v2/models/slow2/ready").status_code == 200
