"""Lane budgets: models loaded on demand, the least recently used idle one evicted,
never one in use, warm lanes first, and a cold load counted into admission; fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduling.config import ClassAdmission, TokenConfig
from scheduling.errors import JobTooLarge, PredictedLate
from scheduling.job import Dispatch
from scheduling.residency import Residency
from scheduling.scheduler import Scheduler
from tests.factories import SERVICE, TOKEN_BASES, drive, make_config, make_job

R18, R50, VIT = (("resnet18", "pytorch", "fp32"), ("resnet50", "pytorch", "fp32"),
                 ("vit_b_16", "pytorch", "fp32"))  # fmt: skip
#: Holds any two of resnet18 (80 MiB), resnet50 (160) and vit_b_16 (260), never all three.
TWO_OF_THREE = 450


def budget_scheduler(budget: int, lanes: int = 1, load_ms: float = 200.0, **knobs) -> Scheduler:
    config = make_config(lanes=lanes, capacity=2000, **knobs)
    load = dict.fromkeys(TOKEN_BASES, load_ms)
    tokens = TokenConfig(capacity=2000, lane_budget=budget, load_ms=load)
    return Scheduler(config.model_copy(update={"tokens": tokens}), TOKEN_BASES, SERVICE)


def test_residency_evicts_least_recently_used_until_the_model_fits() -> None:
    res = Residency(300, {"vit_b_16": 900.0}, 100.0)
    assert res.preload(0, [(R18, 80), (R50, 160), (VIT, 260)], now=0.0) == [R18, R50]
    res.commit(0, R18, 80, None, now=5.0)  # resnet18 used last: resnet50 is the LRU
    swap = res.plan(0, VIT, 260)
    assert swap is not None and swap.evict == (R50, R18) and swap.load_s == pytest.approx(0.9)
    res.commit(0, VIT, 260, swap, now=6.0)
    assert res.held(0) == [VIT] and res.used_mb(0) == 260
    assert (res.counts.loads, res.counts.evictions) == (1, 2)
    assert res.plan(0, VIT, 260) is None  # held: nothing to do


def test_alternating_three_models_on_a_budget_of_two_swaps_each_time() -> None:
    sched = budget_scheduler(TWO_OF_THREE)
    assert sched.preload(0, [R18, R50, VIT], now=0.0) == [R18, R50]
    order = ["resnet18", "resnet50", "vit_b_16"] * 3
    jobs = [make_job(id=i, workload=w, arrival=i * 1.0) for i, w in enumerate(order)]
    trace = drive(sched, jobs)
    assert all(job.outcome == "ok" for job in jobs)
    swaps = [d.swap for d, _ in trace.dispatches]
    # Two held at start; from the third job on, each model is the one evicted last time.
    assert [s is not None for s in swaps] == [False, False] + [True] * 7
    assert [s.evict for s in swaps[2:5] if s] == [(R18,), (R50,), (VIT,)]
    assert (sched.swaps.loads, sched.swaps.evictions) == (7, 7)
    assert sched.swaps.load_s == pytest.approx(7 * 0.2)
    assert sorted(sched.lane_models(0) or []) == sorted([R50, VIT])


def test_a_lane_that_holds_the_model_is_preferred() -> None:
    sched = budget_scheduler(200, lanes=2)
    sched.preload(0, [R18], now=0.0)
    sched.preload(1, [R50], now=0.0)
    first = drive(sched, [make_job(id=0, workload="resnet50"), make_job(id=1, arrival=1.0)])
    lanes = [(d.workload, d.lane, d.swap) for d, _ in first.dispatches]
    assert lanes == [("resnet50", 1, None), ("resnet18", 0, None)]


def test_a_cold_load_counts_into_the_predicted_finish_and_the_lane_end() -> None:
    admission = {"interactive": ClassAdmission(refuse_late=True, margin_ms=0).model_dump()}
    sched = budget_scheduler(85, load_ms=300.0, admission=admission)  # resnet18 or tiny
    sched.preload(0, [R18], now=0.0)
    warm = make_job(id=0, job_class="interactive", slo=0.1)
    sched.submit(warm, 0.0)  # 11 ms on a lane that holds resnet18: admitted
    (d,) = sched.poll(0.0)
    sched.complete(d, 0.011)
    cold = make_job(id=1, workload="tiny", job_class="interactive", slo=0.1, arrival=1.0)
    with pytest.raises(PredictedLate):
        sched.submit(cold, 1.0)  # 300 ms of loading first: late
    ok = make_job(id=2, workload="tiny", job_class="interactive", slo=0.5, arrival=1.0)
    sched.submit(ok, 1.0)
    (d,) = sched.poll(1.0)
    assert d.swap is not None and d.swap.evict == (R18,)
    assert sched._lane_end[0][0] == pytest.approx(1.0 + 0.3 + 0.011)


def test_a_model_bigger_than_the_lane_budget_is_too_large() -> None:
    sched = budget_scheduler(200)
    with pytest.raises(JobTooLarge, match=r"lane budget \(tokens.lane_budget\) of 200"):
        sched.submit(make_job(workload="vit_b_16"), 0.0)


def test_a_failed_load_leaves_the_lane_without_the_model() -> None:
    sched = budget_scheduler(100)
    sched.submit(make_job(id=0), 0.0)
    (d,) = sched.poll(0.0)
    assert d.swap is not None and d.swap.evict == ()
    sched.load_failed(d)
    sched.fail(d, 0.1, "load failed")
    assert sched.lane_models(0) == []


def test_unloading_a_model_drops_it_from_every_lane() -> None:
    sched = budget_scheduler(300, lanes=2)
    sched.preload(0, [R18, R50], now=0.0)
    sched.preload(1, [R18], now=0.0)
    sched.forget_workload("resnet18")
    assert sched.lane_models(0) == [R50] and sched.lane_models(1) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["resnet18", "resnet50", "vit_b_16", "tiny"]),
            st.integers(1, 6),
            st.floats(0, 0.05),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 3),
)
def test_never_evicts_a_model_in_use_and_never_exceeds_the_budget(
    stream: list[tuple[str, int, float]], lanes: int
) -> None:
    sched = budget_scheduler(TWO_OF_THREE, lanes=lanes)
    running: dict[int, Dispatch] = {}

    def check(s: Scheduler, now: float, started: list[Dispatch]) -> None:
        for d in list(running.values()):
            if d.id not in s._running:
                del running[d.id]
        for d in started:
            key = (d.workload, d.backend, d.precision)
            assert d.lane not in {r.lane for r in running.values()}, "lane already running"
            evicted = d.swap.evict if d.swap else ()
            assert key not in evicted
            in_use = {(r.workload, r.backend, r.precision) for r in running.values()
                      if r.lane == d.lane}  # fmt: skip
            assert not in_use & set(evicted)
            assert s._residency.used_mb(d.lane) <= TWO_OF_THREE
            assert key in (s.lane_models(d.lane) or [])
            running[d.id] = d

    t, jobs = 0.0, []
    for i, (workload, samples, gap) in enumerate(stream):
        t += gap
        jobs.append(make_job(id=i, workload=workload, samples=samples, arrival=t))
    drive(sched, jobs, on_poll=check)
    assert all(job.outcome == "ok" for job in jobs)


@pytest.mark.parametrize(("load_ms", "waits"), [(200.0, True), (5.0, False)])
def test_a_job_waits_for_its_models_busy_lane_when_that_beats_a_cold_load(
    load_ms: float, waits: bool
) -> None:
    sched = budget_scheduler(200, lanes=2, load_ms=load_ms)  # one model per lane
    sched.preload(0, [R18], now=0.0)
    sched.preload(1, [R50], now=0.0)
    sched.submit(make_job(id=0, samples=10), 0.0)  # resnet18 on lane 0 for 20 ms
    (first,) = sched.poll(0.0)
    assert first.lane == 0
    sched.submit(make_job(id=1), 0.001)
    started = sched.poll(0.001)
    if waits:  # lane 0 frees at 20 ms, a load on lane 1 would take 200 ms
        assert started == []
        sched.complete(first, 0.020)
        (second,) = sched.poll(0.020)
        assert (second.lane, second.swap) == (0, None)
    else:  # a 5 ms load on idle lane 1 beats waiting for lane 0
        (second,) = started
        assert second.lane == 1 and second.swap is not None and second.swap.evict == (R50,)


def test_a_model_replaced_while_its_jobs_are_queued_keeps_planning_them() -> None:
    sched = budget_scheduler(1000)
    jobs = [make_job(id=i, samples=40) for i in range(3)]
    for job in jobs:
        sched.submit(job, 0.0)
    (running,) = sched.poll(0.0)
    sched.set_workload("resnet18", 100)  # a new version, a new cost: caps relearned
    now = 0.1
    while sched.pending or sched.in_flight:
        sched.complete(running, now)
        started = sched.poll(now)
        if not started:
            break
        (running,) = started
        now += 0.1
    assert all(job.outcome == "ok" for job in jobs)


def test_a_load_never_measured_nor_configured_is_predicted_by_size() -> None:
    res = Residency(500, {"resnet50": 300.0}, 20.0)
    assert res.load_time("resnet18", 80) == pytest.approx(1.6)  # 20 ms per MiB
    assert res.load_time("resnet50", 160) == pytest.approx(0.3)  # configured
    res.note_load("resnet50", 2.5)
    assert res.load_time("resnet50", 160) == pytest.approx(2.5)  # measured


def test_lanes_filled_in_turn_cover_the_models_between_them() -> None:
    sched = budget_scheduler(100, lanes=3)  # resnet18 (80) + tiny (10), or one other
    keys = [R18, ("tiny", "pytorch", "fp32"), R50]
    assert sched.preload(0, keys, now=0.0) == [R18, ("tiny", "pytorch", "fp32")]
    assert sched.preload(1, keys, now=0.0) == keys[:2]  # resnet50 (160) fits nowhere
    budget = budget_scheduler(270, lanes=2)
    assert budget.preload(0, [R18, R50, VIT], now=0.0) == [R18, R50]
    assert budget.preload(1, [R18, R50, VIT], now=0.0) == [VIT]  # the one lane 0 lacks
