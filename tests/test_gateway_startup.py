"""A start-up that fails says why, once, and never hangs; a user's ONNX model is timed by size.

Real gateways: a trained predictor asked to time an ONNX model whose FLOPs its
graph does not tell, and an ONNX file ONNX Runtime cannot load (an operator of
an unknown domain), so a lane fails to start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from predictor.latency import LatencyPredictor
from tests.gateway_fixtures import REPO, LiveServer, free_port, tiny_config
from tests.onnx_models import write_bias, write_mlp, write_unloadable

#: Polling bound for a start-up to end (two busy cores; it ends far sooner).
END_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predictor trained on the tiny model only: other models it times by their size."""
    rows = [
        {
            "workload": "tiny",
            "backend": "onnx",
            "precision": "fp32",
            "batch_size": n,
            "threads": 1,
            "mean_ms": 0.2 + 0.05 * n,
            "p50_ms": 0.2 + 0.05 * n,
            "p95_ms": 0.3 + 0.06 * n,
            "p99_ms": 0.4 + 0.07 * n,
        }
        for n in (1, 2, 4, 8, 16, 32)
    ]
    path = tmp_path_factory.mktemp("predictor") / "tiny.mlws"
    LatencyPredictor("random_forest").train(rows).save(path)
    return path


def _model_config(onnx_dir: Path, model: dict[str, Any], **overrides: Any) -> Any:
    lanes = {"count": 1, "kind": "thread", "threads_per_lane": 1}
    return tiny_config(onnx_dir, models=[model], lanes=lanes, **overrides)


def wait_ended(base_url: str) -> httpx.Response:
    """Poll /readyz until start-up has ended (ready or failed); its last answer."""
    deadline = time.monotonic() + END_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        r = httpx.get(f"{base_url}/readyz", timeout=5)
        if r.status_code == 200 or r.json().get("phase") == "failed":
            return r
        last = r.text
        time.sleep(0.05)
    raise TimeoutError(f"start-up still running after {END_TIMEOUT_S} s: {last}")


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "start-up failed" in r.getMessage()]


def test_a_predictor_that_cannot_size_the_model_fails_start_up_naming_the_fix(
    tmp_path: Path, predictor_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlws")
    model = {"name": "my_bias", "onnx_file": str(write_bias(tmp_path / "bias.onnx"))}
    config = _model_config(tmp_path / "onnx", model, predictor={"path": str(predictor_file)})
    with LiveServer(config, wait=False) as live:
        r = wait_ended(live.base_url)
        assert r.status_code == 503
        body = r.json()
        assert body["phase"] == "failed" and body["error"] == "startup_failed"
        assert "my_bias" in body["detail"] and "flops_per_sample" in body["detail"]
        assert "Retry-After" not in r.headers  # waiting will not help
        stats = httpx.get(f"{live.base_url}/stats").json()
        assert stats["phase"] == "failed" and stats["startup_error"] == body["detail"]
        infer = {"model": "my_bias", "class": "interactive", "batch_size": 1}
        refused = httpx.post(f"{live.base_url}/infer", json=infer)
        assert refused.status_code == 503 and "flops_per_sample" in refused.json()["detail"]
    (record,) = _failures(caplog)  # logged once, one line, no traceback
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert "\n" not in record.getMessage()


def test_a_user_onnx_model_is_timed_from_its_graph_size(
    tmp_path: Path, predictor_file: Path
) -> None:
    model = {"name": "my_mlp", "onnx_file": str(write_mlp(tmp_path / "mlp.onnx"))}
    config = _model_config(tmp_path / "onnx", model, predictor={"path": str(predictor_file)})
    with LiveServer(config) as live, live.client() as client:
        state = client.get("/v1/predictor").json()
        assert state["source"] == "trained"
        assert any(b["model"] == "my_mlp" and b["base_ms"] > 0 for b in state["buckets"])
        # Batch: it accepts late work, so a loaded test machine cannot turn this into a 429.
        body = {"model": "my_mlp", "class": "batch", "batch_size": 2}
        assert client.post("/infer", json=body).status_code == 200


def test_flops_per_sample_in_the_config_lets_the_predictor_time_it(
    tmp_path: Path, predictor_file: Path
) -> None:
    path = write_bias(tmp_path / "bias.onnx")
    model = {"name": "my_bias", "onnx_file": str(path), "flops_per_sample": 1e6}
    config = _model_config(tmp_path / "onnx", model, predictor={"path": str(predictor_file)})
    with LiveServer(config) as live:
        assert httpx.get(f"{live.base_url}/readyz").json() == {"ready": True}


def test_a_lane_that_cannot_load_its_model_fails_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlws")
    model = {"name": "broken", "onnx_file": str(write_unloadable(tmp_path / "broken.onnx"))}
    with LiveServer(_model_config(tmp_path / "onnx", model), wait=False) as live:
        r = wait_ended(live.base_url)
        assert r.status_code == 503 and r.json()["phase"] == "failed"
        assert "starting the lanes" in r.json()["detail"] and "lane 0" in r.json()["detail"]
        assert httpx.get(f"{live.base_url}/healthz").json()["phase"] == "failed"
    (record,) = _failures(caplog)
    assert record.exc_info is None


def test_mlws_serve_exits_1_with_the_reason_when_start_up_fails(tmp_path: Path) -> None:
    model = {"name": "broken", "onnx_file": str(write_unloadable(tmp_path / "broken.onnx"))}
    config = {
        "models": [model],
        "lanes": {"count": 1, "kind": "thread", "threads_per_lane": 1},
        "onnx_dir": str(tmp_path / "onnx"),
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(path)]
    done = subprocess.run(
        [*cmd, "--port", str(free_port()), "--grpc-port", "off"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=END_TIMEOUT_S,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("mlws serve: error: start-up failed in starting the lanes:"), last
    assert "Traceback" not in done.stderr


def test_mlws_serve_refuses_an_unsizable_model_before_starting(
    tmp_path: Path, predictor_file: Path
) -> None:
    model = {"name": "my_bias", "onnx_file": str(write_bias(tmp_path / "bias.onnx"))}
    config = {"models": [model], "predictor": {"path": str(predictor_file)}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=END_TIMEOUT_S)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "mlws serve: error: models.0 ('my_bias'): the predictor (predictor.path)"
    )
    assert "add flops_per_sample" in line
