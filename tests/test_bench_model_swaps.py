"""benchmarks/bench_model_swaps.py without running it: its gateways, traffic and figures.

The benchmark starts two gateways and takes minutes; these check, in milliseconds,
what would otherwise fail only at its end: that the gateway accepts both configs,
that they differ in nothing but the lane budget and that the budget holds two of the
three models, that both gateways get the same arrivals, and that the figures come
out of a repetition's answers and /metrics scrapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_model_swaps import (
    MODELS,
    Run,
    bucket_quantile,
    gateway_configs,
    lane_budget,
    metric_sum,
    model_costs,
    parse_args,
    print_table,
    summarise,
    tally,
    traffic,
)
from benchmarks.common import Answer
from scheduling.simulator import Arrival
from server.config import parse_gateway_config
from tests.onnx_models import write_mlp


def test_the_budget_gateway_holds_two_of_three_and_differs_in_nothing_else(
    tmp_path: Path,
) -> None:
    file = write_mlp(tmp_path / "resnet18.onnx")  # a stand-in: no export needed
    costs = model_costs(file)
    budget = lane_budget(costs)
    assert sum(costs.values()) > budget
    assert all(sum(costs.values()) - costs[m] <= budget for m in MODELS)  # any two fit
    configs = gateway_configs(budget, file=file)
    baseline, limited = (parse_gateway_config(configs[k]) for k in ("baseline", "budget"))
    assert (baseline.scheduler.tokens.lane_budget, limited.scheduler.tokens.lane_budget) == (
        None,
        budget,
    )
    assert limited.model_copy(update={"scheduler": baseline.scheduler}) == baseline


def test_the_traffic_cycles_through_the_models_and_is_the_same_for_both() -> None:
    args = parse_args(["--seconds", "10"])
    arrivals = traffic(args, 8.0, seed=3)
    assert arrivals == traffic(args, 8.0, seed=3)
    assert [a.workload for a in arrivals[:6]] == [*MODELS, *MODELS]
    assert {a.job_class for a in arrivals} == {"interactive", "batch"}
    assert all(a.time < 10 for a in arrivals)


def _run(requests: list[tuple[str, int, float]]) -> Run:
    """A Run from (class, status, e2e ms) per request."""
    arrivals = [
        Arrival(0.1 * i, "resnet18", "onnx", "fp32", c, 1 if c == "interactive" else 4, slo)
        for i, (c, _, _) in enumerate(requests)
        for slo in [0.25 if c == "interactive" else 2.0]
    ]
    answers = [Answer("lean", ms, status, index=i) for i, (_, status, ms) in enumerate(requests)]
    run = tally(arrivals, answers)
    run.others_cpu = 1.0
    return run


def test_figures_count_refusals_as_misses_and_ratios_are_per_repetition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = _run([("interactive", 200, 50.0)] * 4 + [("batch", 200, 300.0)] * 2)
    budget = _run(
        [("interactive", 200, 50.0)] * 2
        + [("interactive", 429, 1.0), ("interactive", 200, 400.0)]
        + [("batch", 200, 600.0)] * 2
    )
    budget.loads, budget.evictions, budget.load_mean_s, budget.load_p95_s = 3, 3, 0.3, 0.45
    assert (budget.refused["interactive"], budget.met["interactive"]) == (1, 2)
    figures = summarise({"baseline": [base], "budget": [budget]})
    assert figures["baseline_interactive_attainment"] == 1.0
    assert figures["budget_interactive_attainment"] == 0.5
    assert figures["interactive_attainment_ratio"] == 0.5
    assert figures["batch_p50_ratio"] == 2.0
    assert figures["budget_loads"] == 3
    json.dumps(figures, allow_nan=False)
    print_table(figures)
    assert "3 loads" in capsys.readouterr().out


def test_load_seconds_p95_is_interpolated_in_the_window_s_buckets() -> None:
    text = (
        'mlws_model_load_seconds_bucket{model="tiny",le="0.1"} 2.0\n'
        'mlws_model_load_seconds_bucket{model="tiny",le="0.5"} 2.0\n'
        'mlws_model_load_seconds_bucket{model="tiny",le="+Inf"} 2.0\n'
        'mlws_model_loads_total{model="tiny"} 2.0\n'
        'mlws_model_loads_total{model="resnet18"} 3.0\n'
    )
    assert metric_sum(text, "mlws_model_loads_total") == 5.0
    assert metric_sum(text, "mlws_model_loads_total", 'model="tiny"') == 2.0
    before = {0.1: 2.0, 0.5: 2.0, float("inf"): 2.0}
    after = {0.1: 2.0, 0.5: 12.0, float("inf"): 12.0}  # ten loads in (0.1, 0.5]
    assert bucket_quantile(before, after, 0.95) == pytest.approx(0.1 + 0.4 * 0.95)
    assert bucket_quantile(before, before, 0.95) != bucket_quantile(before, before, 0.95)  # NaN
