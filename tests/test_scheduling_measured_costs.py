"""The core charging measured memory: resident + per-sample MiB where a profile measured
them, the hand-set table elsewhere; hand-computed traces on a fake clock."""

from __future__ import annotations

import pytest

from scheduling.errors import JobTooLarge, UnknownWorkload
from scheduling.scheduler import Scheduler
from scheduling.tokens import TokenCost, TokenCosts
from tests.factories import SERVICE, TOKEN_BASES, drive, make_config, make_job

ms = 1e-3
PROFILE = "profile configs/profiles/p.csv"
#: ResNet-18 at fp32 as a profile might measure it: 150 MiB resident, 12.5 MiB a sample.
R18 = TokenCost(150.0, 12.5, PROFILE)


def measured_scheduler(capacity: int, lanes: int = 1, **knobs: object) -> Scheduler:
    config = make_config(capacity=capacity, lanes=lanes, **knobs)  # type: ignore[arg-type]
    return Scheduler(config, TOKEN_BASES, SERVICE, measured_costs={("resnet18", "fp32"): R18})


def test_costs_are_measured_where_profiled_and_the_table_elsewhere() -> None:
    costs = TokenCosts(TOKEN_BASES, {("resnet18", "fp32"): R18})
    assert costs.cost("resnet18", "fp32") == R18
    assert costs.tokens("resnet18", 4, "fp32") == 200  # 150 + 12.5 × 4
    assert costs.tokens("resnet18", 3, "fp32") == 188  # 187.5, rounded up
    fp16 = costs.cost("resnet18", "fp16")  # not profiled at fp16: the table, × 0.7
    assert (fp16.base, fp16.per_sample, fp16.source) == (pytest.approx(56), 2.8, "table")
    assert costs.tokens("resnet50", 1, "fp32") == 164
    with pytest.raises(UnknownWorkload):
        costs.cost("gpt5", "fp32")


def test_a_dispatch_holds_its_measured_tokens_and_caps_follow_them() -> None:
    sched = measured_scheduler(capacity=400, split=64)
    assert sched.largest_dispatch("resnet18", "fp32") == 20  # 150 + 12.5 × 20 = 400
    assert sched.largest_dispatch("resnet50", "fp32") == 60  # 160 + 4 × 60 = 400
    trace = drive(sched, [make_job(samples=30)])
    assert [(d.samples, d.tokens) for d, _ in trace.dispatches] == [(20, 400), (10, 275)]


def test_measured_tokens_block_the_head_until_they_fit() -> None:
    jobs = [
        make_job(id=0, samples=8, arrival=0.0),  # 250 of 300 tokens, 18 ms
        make_job(id=1, samples=1, arrival=0.001),  # 163 tokens: waits for job 0
    ]
    seen: list[int] = []
    drive(
        measured_scheduler(capacity=300, lanes=2),
        jobs,
        on_poll=lambda s, now, started: seen.append(s.tokens_in_use),
    )
    assert max(seen) == 250
    assert jobs[1].start == jobs[0].end == pytest.approx(18 * ms)


def test_too_large_names_the_measured_cost_and_its_source() -> None:
    sched = measured_scheduler(capacity=160)
    with pytest.raises(JobTooLarge) as info:
        sched.submit(make_job(), 0.0)
    assert (info.value.tokens, info.value.capacity, info.value.source) == (163, 160, PROFILE)
    assert "163 tokens (MiB, cost from the profile configs/profiles/p.csv)" in str(info.value)
    table = Scheduler(make_config(capacity=80), TOKEN_BASES, SERVICE)
    with pytest.raises(JobTooLarge, match="cost from the hand-set table"):
        table.submit(make_job(), 0.0)


def test_a_model_loaded_at_run_time_keeps_its_measured_cost() -> None:
    sched = measured_scheduler(capacity=400, split=64)
    sched.forget_workload("resnet18")
    with pytest.raises(UnknownWorkload):
        sched.submit(make_job(), 0.0)
    sched.set_workload("resnet18", 80)
    assert sched.costs.cost("resnet18", "fp32") == R18
    assert sched.largest_dispatch("resnet18", "fp32") == 20
