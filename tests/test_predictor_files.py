"""Saved predictors: round trip, and every check `load` makes before trusting a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictor.latency import LatencyPredictor
from predictor.model_file import MAGIC, PredictorFileError, read_header
from tests.test_predictor import TEST, synthetic


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LatencyPredictor, Path]:
    predictor = LatencyPredictor("random_forest").train(synthetic([1, 4, 16], workloads=("m",)))
    path = predictor.save(tmp_path_factory.mktemp("model") / "sub" / "predictor.mlws")
    return predictor, path


def rewrite_header(src: Path, dst: Path, **changes: object) -> Path:
    """Copy a predictor file with some header fields changed (payload untouched)."""
    header, offset = read_header(src)
    header.update(changes)
    body = src.read_bytes()[offset:]
    dst.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + body)
    return dst


def test_round_trip_predicts_the_same(saved: tuple[LatencyPredictor, Path]) -> None:
    predictor, path = saved
    loaded = LatencyPredictor.load(path)
    test = synthetic(TEST, workloads=("m",))
    assert np.allclose(loaded.predict(test), predictor.predict(test))
    assert np.allclose(loaded.predict_quantile(test), predictor.predict_quantile(test))
    assert loaded.model_type == "random_forest" and loaded.info == predictor.info
    header, _ = read_header(path)
    assert header["schema"]["numeric"][0] == "log_batch"
    assert header["schema"]["categorical"] == {
        "backend": ["onnx", "pytorch"],
        "precision": ["fp32"],
    }
    assert len(header["payload_sha256"]) == 64 and header["format_version"] == 2


def test_gradient_boosting_round_trip(tmp_path: Path) -> None:
    booster = LatencyPredictor("gradient_boosting").train(synthetic([1, 4], workloads=("s",)))
    loaded = LatencyPredictor.load(booster.save(tmp_path / "gb.pkl"))
    row = {"workload": "s", "backend": "onnx", "batch_size": 2}
    assert loaded.predict_quantile(row) == booster.predict_quantile(row)
    assert loaded.predict(row) == booster.predict(row)


def test_tampered_payload_is_refused(saved: tuple[LatencyPredictor, Path], tmp_path: Path) -> None:
    data = bytearray(saved[1].read_bytes())
    data[-20] ^= 0xFF
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(bytes(data))
    with pytest.raises(PredictorFileError, match="does not match its header's SHA-256"):
        LatencyPredictor.load(bad)


def test_trees_predict_as_scikit_learn_does() -> None:
    """The saved arrays are evaluated by mlws itself; they must agree with the fitted model."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    from predictor.trees import TreeEnsemble

    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(200, 5)), rng.normal(size=(64, 5))
    y = 2 * X[:, 0] + np.sin(3 * X[:, 1]) + rng.normal(size=200) * 0.1
    models = [
        RandomForestRegressor(n_estimators=20, random_state=0),
        GradientBoostingRegressor(n_estimators=50, random_state=0),
        GradientBoostingRegressor(n_estimators=50, loss="quantile", alpha=0.9, random_state=0),
    ]
    for model in models:
        ours = TreeEnsemble.from_sklearn(model.fit(X, y))
        assert np.allclose(ours.predict(X_test), model.predict(X_test), rtol=0, atol=1e-12)


def test_other_schema_is_refused(saved: tuple[LatencyPredictor, Path], tmp_path: Path) -> None:
    header, _ = read_header(saved[1])
    schema = {**header["schema"], "numeric": ["batch_size", "flops"], "version": 0}
    other = rewrite_header(saved[1], tmp_path / "schema.pkl", schema=schema)
    with pytest.raises(PredictorFileError, match=r"feature schema 0 .* does not match"):
        LatencyPredictor.load(other)


def test_not_a_predictor_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x05N.")  # a valid pickle, but not our format
    with pytest.raises(PredictorFileError, match="not an mlws latency predictor file"):
        LatencyPredictor.load(junk)
    with pytest.raises(PredictorFileError, match="cannot read"):
        LatencyPredictor.load(tmp_path / "missing.pkl")
