"""Start-up and shut-down: /readyz before and after loading, SIGTERM drains, drain timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

import server.startup
from server.lanes.export import export_models
from tests.gateway_fixtures import (
    LiveServer,
    SubprocessServer,
    parse_gateway_config,
    tiny_config,
    wait_ready,
    write_slow_onnx,
)


def test_readyz_is_503_until_models_are_loaded(
    onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def gated_export(config, workloads) -> None:  # holds start-up in its first phase
        release.wait(60)
        export_models(config, workloads)

    monkeypatch.setattr(server.startup, "export_models", gated_export)
    with LiveServer(tiny_config(onnx_dir, lanes={"count": 1}), wait=False) as live:
        health = httpx.get(f"{live.base_url}/healthz")
        assert health.status_code == 200 and health.json()["phase"] == "exporting"
        ready = httpx.get(f"{live.base_url}/readyz")
        assert ready.status_code == 503 and ready.json()["error"] == "unavailable"
        assert "Retry-After" in ready.headers
        body = {"model": "tiny", "class": "interactive", "batch_size": 1}
        early = httpx.post(f"{live.base_url}/infer", json=body)
        assert early.status_code == 503 and "not ready" in early.json()["detail"]
        release.set()
        wait_ready(live.base_url)
        assert httpx.get(f"{live.base_url}/readyz").json() == {"ready": True}
        assert httpx.post(f"{live.base_url}/infer", json=body).status_code == 200


def _slow_config(tmp_path: Path, **overrides: object) -> dict:
    slow = write_slow_onnx(tmp_path / "slow.onnx")
    return {
        "models": [{"name": "slow", "onnx_file": str(slow)}],
        "lanes": {"count": 1, "threads_per_lane": 1},
        "onnx_dir": str(tmp_path / "onnx"),
        **overrides,
    }


def _queued(base_url: str, at_least: int) -> None:
    """Wait until `at_least` interactive jobs sit in the queue."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{base_url}/stats").json()["queue_depth"]["interactive"] >= at_least:
            return
        time.sleep(0.01)
    raise TimeoutError("requests never queued")


BODY = {"model": "slow", "class": "interactive", "batch_size": 1, "slo_ms": 600_000}


def test_sigterm_drains_queued_work_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_slow_config(tmp_path, drain_timeout_s=30)))
    with SubprocessServer(path) as live, ThreadPoolExecutor(4) as pool:
        url = f"{live.base_url}/infer"
        pending = [pool.submit(httpx.post, url, json=BODY, timeout=60) for _ in range(4)]
        _queued(live.base_url, 2)
        live.terminate()
        responses = [p.result() for p in pending]
        assert live.proc.wait(timeout=60) == 0
        output = live.output()
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert "draining" in output and "stopped" in output


def test_work_left_at_the_drain_timeout_gets_503(tmp_path: Path) -> None:
    config = parse_gateway_config(_slow_config(tmp_path, drain_timeout_s=0.2))
    with LiveServer(config) as live, ThreadPoolExecutor(4) as pool:
        url = f"{live.base_url}/infer"
        pending = [pool.submit(httpx.post, url, json=BODY, timeout=60) for _ in range(4)]
        _queued(live.base_url, 3)
        live.server.should_exit = True  # what SIGTERM does, without a signal
        responses = [p.result() for p in pending]
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    late = [r.json() for r in responses if r.status_code == 503]
    assert all(e["error"] == "unavailable" and "shutting down" in e["detail"] for e in late)
