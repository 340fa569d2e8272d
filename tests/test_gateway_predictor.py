"""The live gateway with a trained predictor: the online correction, its metrics and errors.

The predictor is deliberately wrong: trained on a profile 500× slower than the
tiny model really is (as if trained on another machine or thread count). The
gateway must pull its predictions toward the observed service times, export the
residual, and keep the error it reports far below the trained model's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlws.cli import main as mlws_main
from predictor.latency import LatencyPredictor
from server.config import parse_gateway_config
from server.service_times import load_service_models
from tests.gateway_fixtures import LiveServer, tiny_config

#: The fabricated profile: tiny on onnx fp32 at 1 thread, 500 ms + 50 ms per sample.
SLOW_MS = 500.0


@pytest.fixture(scope="module")
def slow_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for n in (1, 2, 4, 8, 16, 32):
        ms = SLOW_MS + 50.0 * n
        rows.append(
            {
                "workload": "tiny",
                "backend": "onnx",
                "precision": "fp32",
                "batch_size": n,
                "threads": 1,
                "mean_ms": ms,
                "p50_ms": ms,
                "p95_ms": ms * 1.05,
                "p99_ms": ms * 1.1,
            }
        )
    path = tmp_path_factory.mktemp("predictor") / "slow.mlws"
    LatencyPredictor("random_forest").train(rows).save(path)
    return path


def _gauge(text: str, name: str, **labels: str) -> float:
    """The value of one series of `name` whose labels include `labels`."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no series {name}{labels} in /metrics")


def test_online_correction_pulls_a_wrong_predictor_toward_observed_times(
    onnx_dir: Path, slow_predictor: Path
) -> None:
    config = tiny_config(onnx_dir, predictor={"path": str(slow_predictor)})
    with LiveServer(config) as server, server.client() as client:
        # Calibration runs before /readyz were already observed and corrected.
        state = client.get("/v1/predictor").json()
        assert state["source"] == "trained"
        assert state["path"] == str(slow_predictor)
        first = {b["batch_bucket"]: b for b in state["buckets"]}
        assert "1" in first
        assert first["1"]["base_ms"] > 0.8 * SLOW_MS  # the trained model is still believed slow
        assert first["1"]["residual_ratio"] < 0.1  # ... but the correction knows better
        assert first["1"]["corrected_ms"] < first["1"]["base_ms"] / 10

        for i in range(30):
            body = {"model": "tiny", "batch_size": 1 + i % 3, "class": "interactive"}
            assert client.post("/infer", json=body).status_code == 200

        state = client.get("/v1/predictor").json()
        buckets = {b["batch_bucket"]: b for b in state["buckets"]}
        assert buckets["1"]["observations"] > first["1"]["observations"]
        assert "2-3" in buckets  # a bucket of its own once batch 2-3 ran
        for b in buckets.values():
            assert b["corrected_ms"] < b["base_ms"] / 10

        metrics = client.get("/metrics").text
        labels = {"model": "tiny", "backend": "onnx"}
        residual = _gauge(metrics, "mlws_predictor_residual_ratio", **labels, batch_bucket="1")
        assert residual == pytest.approx(buckets["1"]["residual_ratio"], rel=0.5)
        assert residual < 0.1
        # The uncorrected model is off by more than 500× (500 ms vs under a millisecond:
        # an error ratio above 500); the corrected prediction the scheduler used last is
        # within tens of the observed time even when a busy machine jitters tiny runs.
        error = _gauge(metrics, "mlws_predictor_error_ratio", **labels)
        assert abs(error) < 50


def test_online_gateway_reports_its_source(onnx_dir: Path) -> None:
    with LiveServer(tiny_config(onnx_dir)) as server, server.client() as client:
        state = client.get("/v1/predictor").json()
    assert state["source"] == "online" and state["path"] is None
    # Calibration observed batch 1 twice per group: the line fit's residual is measured.
    assert any(b["batch_bucket"] == "1" for b in state["buckets"])


def test_serve_refuses_a_missing_predictor_file(tmp_path: Path, capsys) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"predictor: {{path: {tmp_path / 'nope.pkl'}}}\n")
    assert mlws_main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "predictor.path: file not found" in err and "nope.pkl" in err


def test_serve_refuses_a_file_that_is_not_a_predictor(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "bogus.pkl"
    bogus.write_bytes(b"not a model file")
    config = tmp_path / "gw.yaml"
    config.write_text(f"predictor: {{path: {bogus}}}\n")
    assert mlws_main(["serve", "--config", str(config)]) == 2
    assert f"predictor: {bogus}" in capsys.readouterr().err


def test_quantile_without_a_predictor_file_is_a_config_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("predictor: {quantile: 0.95}\n")
    assert mlws_main(["serve", "--config", str(config)]) == 2
    assert "predictor.quantile" in capsys.readouterr().err


def test_a_quantile_plan_answers_above_the_mean(slow_predictor: Path) -> None:
    config = parse_gateway_config(
        {"models": [{"name": "tiny"}], "predictor": {"path": str(slow_predictor), "quantile": 0.95}}
    )
    models = load_service_models(config, {})
    assert set(models) == {g.name for g in config.scheduler.groups()}
    model = models["interactive"]
    key = ("tiny", "onnx", "fp32")
    mean = model.reference.predict(*key, 4)
    assert model.plan(*key, 4) > mean == model.predict(*key, 4) > 0.5  # the slow profile
    # The residual is measured against the mean, so the quantile keeps its margin.
    model.observe(*key, 4, mean / 100)
    assert model.plan(*key, 4) > model.predict(*key, 4) == pytest.approx(mean / 100)
