"""Admission control and shedding over real HTTP, on one lane of a deliberately slow model.

The `slow` model is an identity with a fixed ~0.3 s cost per dispatch, so a
burst of concurrent requests really does pile up behind the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.gateway_fixtures import LiveServer, parse_gateway_config, wait_busy, write_slow_onnx


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path) -> Iterator[LiveServer]:
    slow = write_slow_onnx(tmp_path_factory.mktemp("slow") / "slow.onnx")
    config = parse_gateway_config(
        {
            "models": [{"name": "slow", "onnx_file": str(slow)}],
            "lanes": {"count": 1, "threads_per_lane": 1},
            "onnx_dir": str(onnx_dir),
            "scheduler": {
                "queue_limit": {"interactive": 2, "batch": 2},
                # Shed hopeless jobs, but admit without a forecast: this module tests
                # the queue bound and shedding (test_gateway_admission.py the forecast).
                "admission": {"interactive": {"shed_late": True}, "batch": {"shed_late": True}},
            },
        }
    )
    with LiveServer(config) as live:
        yield live


def _post(base_url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/infer", json=body, timeout=120)


def test_overload_gets_429_with_retry_after_and_every_request_one_answer(server) -> None:
    body = {"model": "slow", "class": "interactive", "batch_size": 1, "slo_ms": 600_000}
    n = 10
    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(lambda _: _post(server.base_url, body), range(n)))
    statuses = sorted(r.status_code for r in responses)
    assert len(responses) == n and set(statuses) <= {200, 429}, [r.text for r in responses]
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected, statuses  # 1 running + 2 queued at most; 10 arrive together
    assert all(r.headers["Retry-After"].isdigit() for r in rejected)
    assert all(r.json()["error"] == "queue_full" for r in rejected)
    assert statuses.count(200) >= 3
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/healthz").status_code == 200
        stats = client.get("/stats").json()["classes"]["interactive"]["outcomes"]
        assert stats["rejected"] == len(rejected) and stats["ok"] == n - len(rejected)
        assert client.post("/infer", json=body, timeout=60).status_code == 200


def test_a_job_that_cannot_meet_its_deadline_is_shed_with_503(server) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    long = {"model": "slow", "class": "interactive", "inputs": x.tolist(), "slo_ms": 600_000}
    hopeless = {**long, "slo_ms": 1}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_post, server.base_url, long)
        wait_busy(server.base_url)
        # The first holds the only lane for ~0.3 s; the second's 1 ms budget is gone
        # before the lane frees up, so it is shed instead of run.
        shed = _post(server.base_url, hopeless)
        assert first.result().status_code == 200
    assert shed.status_code == 503 and shed.json()["error"] == "shed", shed.text
    assert "deadline" in shed.json()["detail"]
    assert len(first.result().json()["outputs"]) == 1
