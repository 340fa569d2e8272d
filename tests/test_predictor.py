"""The learned latency predictor on synthetic profiles with a known law.

Rows follow t = 5 + k_backend · GFLOPs/sample · batch milliseconds (the law of
the issue), so held-out batch sizes and a held-out workload have a known
answer. Small sets: every training here takes well under a second.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from predictor.evaluate import evaluate_predictor, mape, select_rows
from predictor.features import (
    NUMERIC_FEATURES,
    FeatureError,
    feature_matrix,
    feature_names,
    load_profile_data,
    run_cdf,
    run_quantiles,
)
from predictor.latency import LatencyPredictor, conformal_offset
from predictor.service_model import PredictorServiceTime
from tests.factories import make_job, make_scheduler

#: Synthetic workloads: (param_count, flops_per_sample).
SIZES = {"s": (2e6, 0.6e9), "m": (1.2e7, 2.0e9), "l": (2.6e7, 4.5e9), "xl": (6e7, 11e9)}
#: ms per GFLOP per sample, by backend.
SPEED = {"onnx": 0.8, "pytorch": 1.3}


def law_ms(flops: float, batch: int, backend: str) -> float:
    return 5.0 + SPEED[backend] * flops / 1e9 * batch


def synthetic(
    batch_sizes: list[int],
    *,
    workloads: tuple[str, ...] = tuple(SIZES),
    noise: float = 0.0,
    spread: float = 0.03,
    seed: int = 0,
) -> dict[str, list[Any]]:
    """Profile columns following the law; `noise` scatters each row's level (lognormal sigma),
    `spread` is each row's run-to-run spread (p95 = level × (1 + 1.645·spread))."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {k: [] for k in ("workload", "backend", "precision")}
    for k in ("batch_size", "threads", "param_count", "flops_per_sample"):
        cols[k] = []
    for k in ("mean_ms", "p50_ms", "p95_ms", "p99_ms"):
        cols[k] = []
    for w in workloads:
        params, flops = SIZES[w]
        for backend in SPEED:
            for b in batch_sizes:
                level = law_ms(flops, b, backend) * float(np.exp(rng.normal(0, noise)))
                cols["workload"].append(w)
                cols["backend"].append(backend)
                cols["precision"].append("fp32")
                cols["batch_size"].append(b)
                cols["threads"].append(1)
                cols["param_count"].append(params)
                cols["flops_per_sample"].append(flops)
                cols["mean_ms"].append(level * (1 + 0.2 * spread))
                cols["p50_ms"].append(level)
                cols["p95_ms"].append(level * (1 + 1.645 * spread))
                cols["p99_ms"].append(level * (1 + 2.326 * spread))
    return cols


TRAIN, TEST = [1, 4, 16, 64], [2, 8, 32]


@pytest.fixture(scope="module")
def forest() -> LatencyPredictor:
    return LatencyPredictor("random_forest").train(synthetic(TRAIN))


# ----------------------------------------------------------------------------- features
def test_feature_schema_and_defaults() -> None:
    data = load_profile_data(
        {"workload": ["resnet18"], "backend": ["onnx"], "batch_size": [8], "mean_ms": [40.0]}
    )
    # precision, threads and busy_lanes default; sizes come from the catalogue
    assert (data.precision[0], data.threads[0], data.busy_lanes[0]) == ("fp32", 1, 0)
    assert data.flops_per_sample[0] == pytest.approx(3.628e9)
    cats = {"backend": ["onnx", "pytorch"], "precision": ["fp32"]}
    names = feature_names(cats)
    assert names[: len(NUMERIC_FEATURES)] == list(NUMERIC_FEATURES)
    assert names[len(NUMERIC_FEATURES) :] == ["backend=onnx", "backend=pytorch", "precision=fp32"]
    row = feature_matrix(data, cats)[0]
    assert row[names.index("log_batch")] == pytest.approx(np.log(8))
    assert row[names.index("log_work")] == pytest.approx(np.log(3.628e9 * 8))
    assert row[names.index("busy_lanes")] == 0
    assert list(row[-3:]) == [1.0, 0.0, 1.0]


def test_feature_errors_name_the_problem() -> None:
    with pytest.raises(FeatureError, match="workload 'mystery': no param_count"):
        load_profile_data({"workload": ["mystery"], "backend": ["onnx"], "batch_size": [1]})
    with pytest.raises(FeatureError, match="missing column"):
        load_profile_data({"workload": ["resnet18"], "batch_size": [1]})
    with pytest.raises(FeatureError, match="batch_size must be >= 1"):
        load_profile_data({"workload": ["resnet18"], "backend": ["onnx"], "batch_size": [0]})
    data = load_profile_data({"workload": ["resnet18"], "backend": ["tvm"], "batch_size": [1]})
    with pytest.raises(FeatureError, match="backend tvm not in the training data"):
        feature_matrix(data, {"backend": ["onnx"], "precision": ["fp32"]})


def test_run_cdf_and_its_inverse_agree() -> None:
    p50, p95, p99 = np.array([10.0]), np.array([12.0]), np.array([13.0])
    assert run_cdf(np.array([10.0]), p50, p95, p99)[0] == pytest.approx(0.5)
    assert run_cdf(np.array([12.0]), p50, p95, p99)[0] == pytest.approx(0.95)
    assert run_cdf(np.array([99.0]), p50, p95, p99)[0] == 1.0
    levels = np.array([0.05, 0.5, 0.95])
    assert run_quantiles(levels, p50, p95, p99)[0] == pytest.approx([8.0, 10.0, 12.0])
    assert conformal_offset(np.arange(100.0), 0.95) == 95.0


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("model_type", ["random_forest", "gradient_boosting"])
def test_held_out_batch_sizes_follow_the_law(model_type: str) -> None:
    workloads = ("s", "l")
    predictor = LatencyPredictor(model_type).train(synthetic(TRAIN, workloads=workloads))
    test = load_profile_data(synthetic(TEST, workloads=workloads))
    result = evaluate_predictor(predictor, test)
    assert result["mape"] < 3.0, result
    assert result["coverage"] >= 0.9
    assert set(result["per_group"]) == {f"{w}/{b}" for w in workloads for b in SPEED}


def test_leave_one_workload_out_predicts_from_size() -> None:
    data = load_profile_data(synthetic(TRAIN + TEST))
    predictor = LatencyPredictor().train(select_rows(data, exclude_workloads=["l"]))
    held = select_rows(data, workloads=["l"])
    assert mape(np.asarray(predictor.predict(held)), held.stat("mean_ms")) < 10.0


@pytest.mark.parametrize("model_type", ["random_forest", "gradient_boosting"])
def test_quantile_covers_noisy_runs(model_type: str) -> None:
    noisy = {"workloads": ("s", "m", "xl"), "noise": 0.06, "spread": 0.08}
    predictor = LatencyPredictor(model_type).train(synthetic(TRAIN, **noisy))
    test = load_profile_data(synthetic(TEST, **noisy, seed=1))
    result = evaluate_predictor(predictor, test, q=0.95)
    assert result["coverage"] >= 0.9, result
    assert result["mape"] < 10.0
    assert np.all(predictor.predict_quantile(test) > predictor.predict(test))


def test_predict_accepts_a_row_columns_and_a_list(forest: LatencyPredictor) -> None:
    row = {"workload": "m", "backend": "onnx", "batch_size": 8}
    one = forest.predict(row)
    assert isinstance(one, float)
    assert one == pytest.approx(law_ms(2.0e9, 8, "onnx") * 1.006, rel=0.03)
    many = forest.predict({"workload": ["m", "m"], "backend": ["onnx"] * 2, "batch_size": [8, 2]})
    assert isinstance(many, np.ndarray) and many[0] == pytest.approx(one)
    assert forest.predict([row, {**row, "batch_size": 2}])[1] == pytest.approx(many[1])
    # an unseen model, described by its size
    new = {**row, "workload": "new", "param_count": 3e7, "flops_per_sample": 6e9}
    assert forest.predict(new) == pytest.approx(law_ms(6e9, 8, "onnx"), rel=0.1)


def test_untrained_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="not trained"):
        LatencyPredictor().predict({"workload": "resnet18", "backend": "onnx", "batch_size": 1})
    with pytest.raises(ValueError, match="unknown model_type"):
        LatencyPredictor("svm")
    small = synthetic([1, 4], workloads=("m",))
    booster = LatencyPredictor("gradient_boosting", quantiles=(0.9,)).train(small)
    with pytest.raises(ValueError, match=r"quantile 0.95 was not trained \(trained: 0.9\)"):
        booster.predict_quantile({"workload": "m", "backend": "onnx", "batch_size": 2}, 0.95)


# ----------------------------------------------------------------------------- service model
def test_service_model_view_is_seconds_monotone_and_cached(forest: LatencyPredictor) -> None:
    model = forest.as_service_model(threads=1)
    assert isinstance(model, PredictorServiceTime)
    ms = forest.predict({"workload": "m", "backend": "pytorch", "batch_size": 8})
    assert model.predict("m", "pytorch", "fp32", 8) == pytest.approx(ms / 1e3)
    curve = [model.predict("m", "pytorch", "fp32", n) for n in range(1, 300)]
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert len(model._curves) == 1  # one vectorised curve per (workload, backend, precision)
    tail = forest.as_service_model(quantile=0.95)
    mean = model.predict("m", "pytorch", "fp32", 8)
    assert tail.plan("m", "pytorch", "fp32", 8) > tail.predict("m", "pytorch", "fp32", 8) == mean
    assert model.plan("m", "pytorch", "fp32", 8) == mean  # no quantile: plans with the mean
    with pytest.raises(ValueError, match="samples must be >= 1"):
        model.predict("m", "pytorch", "fp32", 0)


def test_a_quantile_predictor_sheds_on_its_mean(forest: LatencyPredictor) -> None:
    """Fake clock: a job whose SLO lies between its mean and its 0.95 quantile can still
    make it on average, so a scheduler planning at the quantile must not shed it."""
    tail = forest.as_service_model(quantile=0.95)
    key = ("m", "pytorch", "fp32")
    mean, plan = tail.predict(*key, 1), tail.plan(*key, 1)
    assert mean < plan
    sched = make_scheduler(service_model=tail, shed_late=True, token_bases={"m": 10})
    job = make_job(workload="m", job_class="interactive", arrival=0.0, slo=(mean + plan) / 2)
    sched.submit(job, 0.0)
    [dispatch] = sched.poll(0.0)
    assert sched.take_shed() == [] and dispatch.parts[0].job is job
