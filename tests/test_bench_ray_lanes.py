"""benchmarks/bench_ray_lanes.py without running it: its gateways and its figures.

The benchmark starts two gateways and a Ray instance and takes minutes; these check,
in milliseconds, what would otherwise fail only at its end: that the gateway accepts
both configs and that they differ in nothing but the lane kind, and that the
figures and the table come out of a repetition's measurements.
"""

from __future__ import annotations

import pytest

from benchmarks.bench_gateway_efficiency import GatewayRun
from benchmarks.bench_gateway_overhead import Row
from benchmarks.bench_ray_lanes import (
    KINDS,
    Repetition,
    gateway_configs,
    parse_args,
    print_table,
    summarise,
)
from benchmarks.common import RawRun
from server.config import parse_gateway_config


def test_the_two_gateways_differ_only_in_their_lane_kind() -> None:
    configs = gateway_configs(parse_args(["--quick"]))
    thread, ray = (parse_gateway_config(configs[k]) for k in KINDS)
    assert (thread.lanes.kind, ray.lanes.kind) == ("thread", "ray")
    assert ray.lanes.ray.address is None  # the gateway starts a local Ray instance
    assert ray.model_copy(update={"lanes": thread.lanes}) == thread


def _row(e2e: float, service: float) -> Row:
    return Row(
        raw_p50=40.0,
        raw_paced_p50=42.0,
        e2e_p50=e2e,
        queue_p50=0.5,
        service_p50=service,
        server_e2e_p50=service + 0.5,
        outside_p50=e2e - service - 0.5,
        late_p50=1.0,
        ok=20,
        failed=0,
        others_cpu=1.0,
    )


def _repetition(ray_e2e: float, ray_rate: float) -> Repetition:
    rep = Repetition(
        rows={"thread": _row(50.0, 45.0), "ray": _row(ray_e2e, ray_e2e - 5.0)},
        raw=RawRun(rate=40.0, cpu_pct=190.0),
        runs={k: GatewayRun(rate, rate, 1.0) for k, rate in (("thread", 36.0), ("ray", ray_rate))},
    )
    for phase in ("latency", "efficiency"):
        for what in ("raw", *KINDS):
            rep.cpu[phase, what] = {"thread": 90.0, "ray": 95.0, "others": 2.0}
    return rep


def test_figures_are_medians_of_ray_against_thread_per_repetition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse_args(["--repeats", "3"])
    reps = [_repetition(56.0, 30.0), _repetition(58.0, 32.0), _repetition(70.0, 27.0)]
    figures = summarise(reps, args, rate=4.0)
    assert figures["ray_added_ms_per_dispatch"] == 8.0  # 6, 8, 20
    assert figures["thread_added_ms"] == 10.0
    assert figures["ray_added_ms"] == 18.0
    assert figures["efficiency_thread"] == 0.9
    assert figures["efficiency_ray"] == 0.75
    assert figures["ray_over_thread"] == round(30.0 / 36.0, 3)
    print_table(figures)
    assert "+8.00 ms per dispatch" in capsys.readouterr().out
