"""The simulator under a lane budget: more models than fit, loaded on demand, the least
recently used evicted; swaps and their cost in summary.json. Virtual time only."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.arrivals import arrival_rate, poisson_arrivals
from loadgen.config import ExperimentConfig, parse_experiment_config
from loadgen.experiment import build_service_model, simulate_run
from scheduling.simulator import Arrival, simulate
from tests.factories import SERVICE, TOKEN_BASES, make_config

FIXED = {"base_ms": 8, "per_sample_ms": 3.5}
#: ResNet-18 80 MiB, ResNet-50 160, ViT-B/16 260 (the hand-set table): 450 holds two.
MODELS = {"resnet18": 1, "resnet50": 1, "vit_b_16": 1}


def experiment(lane_budget: int | None) -> ExperimentConfig:
    return parse_experiment_config(
        {
            "name": "swaps",
            "duration_s": 30,
            "load": 0.05,
            "interactive_ratio": 0.0,
            "batch_sizes": {"batch": {"min": 1, "max": 4}},
            "workload_mix": MODELS,
            "service_time": {"fixed": dict.fromkeys(MODELS, FIXED)},
            "scheduler": {
                "policy": "fifo",
                "lanes": 1,
                "tokens": {
                    "capacity": 2000,
                    "lane_budget": lane_budget,
                    "load_ms": {"resnet18": 100, "resnet50": 200, "vit_b_16": 300},
                },
            },
            "seed": 3,
        }
    )


def run(config: ExperimentConfig) -> dict[str, Any]:
    model = build_service_model(config)
    arrivals = poisson_arrivals(config, arrival_rate(config, model), config.duration_s, 3)
    return simulate_run(config, arrivals, model).summary


def test_models_beyond_the_budget_swap_and_summary_json_counts_them() -> None:
    swapping, roomy = run(experiment(450)), run(experiment(None))
    swaps = swapping["run"]["swaps"]
    assert swaps["lane_budget_mb"] == 450
    assert swaps["loads"] > 10 and swaps["evictions"] > 10
    # Every load costs its model's configured time: between 0.1 and 0.3 s each.
    assert 0.1 * swaps["loads"] <= swaps["load_s"] <= 0.3 * swaps["loads"]
    assert 0 < swaps["load_share"] < 1
    assert roomy["run"]["swaps"] == {
        "lane_budget_mb": None,
        "loads": 0,
        "evictions": 0,
        "load_s": 0.0,
        "load_share": 0.0,
    }
    # The loads are what the budget costs: later answers than with room for all.
    assert (
        swapping["classes"]["batch"]["latency_ms"]["e2e"]["p99"]
        > (roomy["classes"]["batch"]["latency_ms"]["e2e"]["p99"])
    )


def test_a_dispatch_that_swaps_runs_as_long_as_its_load_plus_its_service() -> None:
    config = make_config(lanes=1, capacity=2000)
    tokens = config.tokens.model_copy(update={"lane_budget": 100, "load_ms": {"tiny": 250}})
    config = config.model_copy(update={"tokens": tokens})
    arrivals = [
        Arrival(0.0, "resnet18", "pytorch", "fp32", "batch", 1, 10.0),  # held at start
        Arrival(1.0, "tiny", "pytorch", "fp32", "batch", 1, 10.0),  # 80 + 10 fit: no eviction
        Arrival(2.0, "resnet18", "pytorch", "fp32", "batch", 1, 10.0),
    ]
    result = simulate(config, arrivals, SERVICE, TOKEN_BASES)
    ends = [job.end - job.arrival for job in result.jobs]
    assert ends == pytest.approx([0.011, 0.011, 0.011])  # both fit the 100 MiB budget
    assert (result.swaps.loads, result.swaps.evictions) == (0, 0)
    tight = config.model_copy(update={"tokens": tokens.model_copy(update={"lane_budget": 85})})
    result = simulate(tight, arrivals, SERVICE, TOKEN_BASES)
    ends = [job.end - job.arrival for job in result.jobs]
    # tiny evicts resnet18 (250 ms load), then resnet18 comes back: 80 MiB at the default
    # 20 ms per MiB, 1.6 s.
    assert ends == pytest.approx([0.011, 0.261, 1.611])
    assert (result.swaps.loads, result.swaps.evictions) == (2, 2)
