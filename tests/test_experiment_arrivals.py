"""Poisson arrivals (deterministic, right rate and mix) and the capacity behind `load`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from loadgen.arrivals import (
    arrival_rate,
    capacity_jobs_per_s,
    draw_columns,
    job_service_s,
    mean_job_service_s,
    poisson_arrivals,
)
from loadgen.config import ExperimentConfig
from scheduling.service_time import FixedServiceTime


def config(**overrides: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "t",
        "duration_s": 100,
        "arrival_rate": 50,
        "interactive_ratio": 0.3,
        "workload_mix": {"resnet18": 3, "resnet50": 1},
        "backends": {"onnx": 1, "pytorch": 1},
        "service_time": {"fixed": {"*": {"base_ms": 10, "per_sample_ms": 2}}},
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    c = config()
    a, b = poisson_arrivals(c, 50, 100, seed=7), poisson_arrivals(c, 50, 100, seed=7)
    assert a == b
    assert poisson_arrivals(c, 50, 100, seed=8) != a


def test_rate_ratio_and_mix_within_tolerance() -> None:
    c = config()
    arrivals = poisson_arrivals(c, 50, 100, seed=1)
    n = len(arrivals)
    assert abs(n - 5000) < 4 * np.sqrt(5000)  # Poisson: sd = sqrt(mean)
    times = [a.time for a in arrivals]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 100
    interactive = [a for a in arrivals if a.job_class == "interactive"]
    assert abs(len(interactive) / n - 0.3) < 0.03
    assert abs(sum(a.workload == "resnet18" for a in arrivals) / n - 0.75) < 0.03
    assert abs(sum(a.backend == "onnx" for a in arrivals) / n - 0.5) < 0.03
    assert {a.samples for a in interactive} == {1}
    assert {a.slo for a in interactive} == {0.1}
    batch_sizes = {a.samples for a in arrivals if a.job_class == "batch"}
    assert batch_sizes == set(range(16, 33))  # uniform range, both ends included
    assert {a.precision for a in arrivals} == {"fp32"}


def test_choices_follow_their_weights() -> None:
    c = config(batch_sizes={"batch": {"choices": [4, 64], "weights": [9, 1]}})
    cols = draw_columns(c, 50, 100, seed=2)
    batch = cols.samples[~cols.interactive]
    assert set(batch.tolist()) == {4, 64}
    assert abs(float(np.mean(batch == 4)) - 0.9) < 0.03


def test_a_million_arrivals_are_vectorised() -> None:
    started = time.perf_counter()
    cols = draw_columns(config(), 10_000, 100, seed=3)
    assert abs(len(cols) - 1_000_000) < 5_000
    assert time.perf_counter() - started < 2.0  # numpy only: ~0.1 s


def test_capacity_is_lanes_over_mean_unbatched_service_time() -> None:
    c = config(
        workload_mix={"resnet18": 1},
        backends={"onnx": 1},
        interactive_ratio=0.25,
        batch_sizes={"interactive": {"choices": [1]}, "batch": {"min": 2, "max": 4}},
        scheduler={"lanes": 3},
    )
    model = FixedServiceTime({"*": (10.0, 2.0)})  # 10 + 2 n ms
    # E[S] = 0.25 * 12 ms + 0.75 * mean(14, 16, 18) ms = 3 + 12 = 15 ms
    assert mean_job_service_s(c, model) == pytest.approx(0.015)
    assert capacity_jobs_per_s(c, model) == pytest.approx(3 / 0.015)
    assert arrival_rate(c, model) == 50
    loaded = c.model_copy(update={"arrival_rate": None, "load": 0.5})
    assert arrival_rate(loaded, model) == pytest.approx(0.5 * 200)


def test_split_jobs_pay_one_fixed_cost_per_part() -> None:
    c = config(scheduler={"max_dispatch_samples": 16})
    model = FixedServiceTime({"*": (10.0, 2.0)})
    # 40 samples = 16 + 16 + 8: three fixed costs
    assert job_service_s(model, c, "resnet18", "onnx", 40) == pytest.approx(0.030 + 0.080)


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        poisson_arrivals(config(), 0, 10, seed=0)
