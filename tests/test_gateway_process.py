"""Process lanes over real HTTP: a spawned worker, shared memory, and workers killed on purpose.

Tests run in file order against one server: serve, kill an idle worker, kill a
busy one, then shut down and check that shared memory is gone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backends.base import LoadOptions
from backends.registry import load_runner
from tests.gateway_fixtures import (
    LiveServer,
    b64_inputs,
    parse_gateway_config,
    pid_alive,
    wait_busy,
    write_slow_onnx,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path) -> Iterator[LiveServer]:
    # ~0.6 s a dispatch: time enough to see the lane busy and kill its worker mid-run.
    slow = write_slow_onnx(tmp_path_factory.mktemp("slow") / "slow.onnx", matmuls=24)
    config = parse_gateway_config(
        {
            "models": [{"name": "tiny"}, {"name": "slow", "onnx_file": str(slow)}],
            "lanes": {"count": 1, "kind": "process", "threads_per_lane": 1},
            "onnx_dir": str(onnx_dir),
        }
    )
    with LiveServer(config) as live:
        yield live


def lane0(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/v1/lanes", timeout=10).json()["lanes"][0]


def wait_restarted(server: LiveServer, restarts: int, old_pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = lane0(server)
        if row["restarts"] >= restarts and row["ready"] and row["pid"] != old_pid:
            return row
        time.sleep(0.05)
    raise TimeoutError(f"lane 0 not restarted: {lane0(server)}")


def infer_tiny(server: LiveServer, x: np.ndarray) -> httpx.Response:
    body = {"model": "tiny", "class": "interactive", "inputs": b64_inputs(x), "return": "logits"}
    return httpx.post(f"{server.base_url}/infer", json=body, timeout=120)


def test_a_process_lane_serves_real_inputs(server: LiveServer, onnx_dir: Path) -> None:
    row = lane0(server)
    assert row["kind"] == "process" and row["ready"] and row["restarts"] == 0
    assert row["pid"] != os.getpid() and pid_alive(row["pid"])
    x = np.random.default_rng(7).standard_normal((5, 3, 32, 32), dtype=np.float32)
    r = infer_tiny(server, x)
    assert r.status_code == 200, r.text
    expected = load_runner("tiny", "onnx", LoadOptions(onnx_dir=onnx_dir, threads=1)).run(x)
    np.testing.assert_allclose(np.array(r.json()["outputs"]), expected, rtol=1e-5, atol=1e-6)


def test_an_idle_worker_killed_is_restarted(server: LiveServer) -> None:
    pid = lane0(server)["pid"]
    os.kill(pid, signal.SIGKILL)
    # A request sent right away either reaches the dying worker (503 with a reason)
    # or waits for its replacement (200); it never hangs.
    x = np.zeros((1, 3, 32, 32), dtype=np.float32)
    r = infer_tiny(server, x)
    assert r.status_code == 200 or r.json()["error"] == "worker_failed", r.text
    row = wait_restarted(server, 1, pid)
    assert row["restarts"] >= 1 and not pid_alive(pid)
    assert infer_tiny(server, x).status_code == 200


def test_a_busy_worker_killed_fails_its_request_with_a_reason(server: LiveServer) -> None:
    body = {"model": "slow", "class": "batch", "batch_size": 2}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{server.base_url}/infer", json=body, timeout=120)
        pid = wait_busy(server.base_url)["pid"]
        os.kill(pid, signal.SIGKILL)
        r = pending.result()
    assert r.status_code == 503, r.text
    error = r.json()
    assert error["error"] == "worker_failed"
    assert "SIGKILL" in error["detail"] and "lane 0" in error["detail"]
    assert r.headers.get("Retry-After")
    row = wait_restarted(server, 2, pid)
    assert row["restarts"] >= 2
    ok = httpx.post(f"{server.base_url}/infer", json=body, timeout=120)
    assert ok.status_code == 200 and len(ok.json()["outputs"]) == 2
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'mlws_requests_total{class="batch",model="slow",outcome="error"} 1.0' in metrics


def test_shutdown_stops_the_worker_and_unlinks_shared_memory(server: LiveServer) -> None:
    lane = server.app.state.gateway.pool.lanes[0]
    names = [lane._in.name, lane._out.name]
    pid = lane0(server)["pid"]
    assert all(Path("/dev/shm", n).exists() for n in names)
    server.__exit__()
    assert not any(Path("/dev/shm", n).exists() for n in names)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)
