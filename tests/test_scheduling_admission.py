"""Admission by predicted completion, shedding in the queue and at dispatch, lane groups.

Fake clock, fixed service times (10 ms + 1 ms per sample): every expected number
below is added up by hand.
"""

from __future__ import annotations

import pytest

from scheduling.errors import PredictedLate
from scheduling.service_time import FixedServiceTime
from tests.factories import SERVICE, make_job, make_scheduler

ON = {"refuse_late": True, "shed_late": True}
GROUPS = [
    {"name": "interactive", "count": 1, "classes": ["interactive"]},
    {"name": "batch", "count": 2, "classes": ["batch"], "priority": "low"},
]


def interactive(i: int, t: float = 0.0, slo: float = 0.1):
    return make_job(id=i, job_class="interactive", samples=1, arrival=t, slo=slo)


def test_a_job_that_fits_is_admitted_with_its_forecast() -> None:
    sched = make_scheduler(lanes=1, admission={"interactive": ON})
    job = interactive(0)
    sched.submit(job, 0.0)
    assert job.predicted_end == pytest.approx(0.011)  # idle lane: its own 11 ms
    assert sched.pending == 1


def test_a_job_behind_enough_work_is_refused_with_the_predicted_drain() -> None:
    sched = make_scheduler(lanes=1, admission={"interactive": ON})
    sched.submit(interactive(0), 0.0)
    assert len(sched.poll(0.0)) == 1  # job 0 runs until 0.011
    for i in range(1, 9):  # job i would finish at 0.011 * (i + 1) <= 0.099
        sched.submit(interactive(i), 0.0)
    late = interactive(9)
    with pytest.raises(PredictedLate) as refused:
        sched.submit(late, 0.0)
    exc = refused.value
    assert exc.predicted_finish == pytest.approx(0.110)
    assert exc.deadline == pytest.approx(0.1)
    # The lane frees at 0.011, then 8 queued jobs of 11 ms: 0.099 until it could start.
    assert exc.retry_after == pytest.approx(0.099)
    assert "finish 110 ms after arrival, 10 ms past its 100 ms deadline" in str(exc)
    assert sched.pending == 8 and late.enqueue == 0.0 and late.outcome is None


def test_the_margin_is_kept_in_hand() -> None:
    rules = {"interactive": {**ON, "margin_ms": 5.0}}
    sched = make_scheduler(lanes=1, admission=rules)
    sched.submit(interactive(0), 0.0)
    sched.poll(0.0)
    for i in range(1, 8):  # finishes at <= 0.088 + 5 ms margin: fits
        sched.submit(interactive(i), 0.0)
    with pytest.raises(PredictedLate):  # 0.099 + 0.005 > 0.1
        sched.submit(interactive(8), 0.0)


def test_work_that_runs_after_it_does_not_count() -> None:
    """priority_slo: queued batch work runs after a new interactive job; only what
    the policy puts first is counted."""
    sched = make_scheduler(policy="priority_slo", lanes=1, admission={"interactive": ON})
    for i in range(20):
        sched.submit(make_job(id=100 + i, job_class="batch", samples=10, arrival=0.0), 0.0)
    sched.poll(0.0)  # one 20 ms batch dispatch runs until 0.020
    job = interactive(0)
    sched.submit(job, 0.0)
    assert job.predicted_end == pytest.approx(0.031)


def test_split_work_fans_out_over_the_group_lanes() -> None:
    sched = make_scheduler(lanes=2, split=10, admission={"batch": {"refuse_late": True}})
    job = make_job(id=0, job_class="batch", samples=40, arrival=0.0, slo=1.0)
    sched.submit(job, 0.0)
    # Four 10-sample parts of 20 ms over two lanes: two rounds.
    assert job.predicted_end == pytest.approx(0.040)


def test_a_job_that_becomes_hopeless_in_the_queue_is_shed() -> None:
    sched = make_scheduler(lanes=1, split=None, admission={"interactive": {"shed_late": True}})
    long = make_job(id=0, job_class="batch", samples=100, arrival=0.0, slo=10.0)
    sched.submit(long, 0.0)
    [d] = sched.poll(0.0)  # 110 ms on the only lane
    job = interactive(1, slo=0.05)
    sched.submit(job, 0.0)  # admitted: this class does not refuse, only sheds
    sched.complete(d, 0.110)
    assert sched.poll(0.110) == []
    [shed] = sched.take_shed()
    assert shed is job and job.outcome == "shed" and job.end == 0.110
    assert job.saved_s == pytest.approx(0.011)  # the service time not spent


def test_a_class_that_accepts_late_work_keeps_it() -> None:
    sched = make_scheduler(lanes=1, split=None, admission={"interactive": {"shed_late": False}})
    sched.submit(make_job(id=0, job_class="batch", samples=100, arrival=0.0, slo=10.0), 0.0)
    [d] = sched.poll(0.0)
    job = interactive(1, slo=0.05)
    sched.submit(job, 0.0)
    sched.complete(d, 0.110)
    [late] = sched.poll(0.110)
    assert late.jobs == [job] and sched.take_shed() == []


def test_a_dispatch_predicted_to_end_past_every_deadline_is_not_started() -> None:
    """Each job alone could still make it (its own next part is short), but the
    micro-batch they form would end after both deadlines: it is not started."""
    service = FixedServiceTime.linear(10.0, 1.0)
    sched = make_scheduler(
        lanes=1,
        microbatch=True,
        window_ms=0.0,
        service_model=service,
        admission={"batch": {"shed_late": True}},
    )
    a = make_job(id=0, job_class="batch", samples=30, arrival=0.0, slo=0.045)
    b = make_job(id=1, job_class="batch", samples=30, arrival=0.0, slo=0.045)
    for job in (a, b):
        sched.submit(job, 0.0)
    # Planned together: 10 + 60 = 70 ms > 45 ms. The deadline guard keeps b out
    # only if a alone makes it (40 ms <= 45 ms): it does, so a runs alone...
    [d] = sched.poll(0.0)
    assert d.jobs == [a]
    # ...and b, whose own 40 ms would end at 0.080, is shed when a lane frees.
    sched.complete(d, 0.040)
    assert sched.poll(0.040) == []
    assert [j.id for j in sched.take_shed()] == [1]


def test_hopeless_whole_dispatch_is_shed_but_one_that_saves_a_job_runs() -> None:
    sched = make_scheduler(
        lanes=1, microbatch=True, window_ms=0.0, admission={"batch": {"shed_late": True}}
    )
    blocker = make_job(id=9, job_class="interactive", samples=30, arrival=0.0, slo=10.0)
    sched.submit(blocker, 0.0)
    [d] = sched.poll(0.0)  # 40 ms
    late = make_job(id=0, job_class="batch", samples=1, arrival=0.0, slo=0.045)
    sched.submit(late, 0.0)
    sched.complete(d, 0.040)
    # At 0.040 its own 11 ms would end at 0.051 > 0.045: shed, not started.
    assert sched.poll(0.040) == []
    assert sched.take_shed() == [late]


def test_lane_groups_keep_classes_on_their_own_lanes() -> None:
    sched = make_scheduler(lane_groups=GROUPS)
    for i in range(3):
        sched.submit(make_job(id=i, job_class="batch", samples=1, arrival=0.0), 0.0)
    started = sched.poll(0.0)
    assert sorted(d.lane for d in started) == [1, 2]  # the batch group's lanes only
    assert all(sched.lane_group(d.lane).name == "batch" for d in started)
    job = interactive(10)
    sched.submit(job, 0.0)
    [d] = sched.poll(0.0)  # the third batch job still waits; interactive has a lane
    assert d.jobs == [job] and d.lane == 0 and d.group == 0


def test_each_group_plans_with_its_own_model_and_budget() -> None:
    fast = FixedServiceTime.linear(0.0, 1.0)
    slow = FixedServiceTime.linear(0.0, 10.0)
    groups = [
        {"name": "interactive", "count": 1, "classes": ["interactive"], "max_dispatch_ms": 5},
        {"name": "batch", "count": 1, "classes": ["batch"], "max_dispatch_ms": 50},
    ]
    sched = make_scheduler(
        lane_groups=groups, service_model={"interactive": fast, "batch": slow}, split=None
    )
    key = ("resnet18", "pytorch", "fp32")
    assert sched.dispatch_caps("interactive", key)[1] == 5  # 5 samples of 1 ms
    assert sched.dispatch_caps("batch", key)[1] == 5  # 5 samples of 10 ms
    job = make_job(id=0, job_class="interactive", samples=3, arrival=0.0)
    sched.submit(job, 0.0)
    assert sched.service_model("interactive").predict(*key, 3) == pytest.approx(0.003)
    with pytest.raises(ValueError, match="no service-time model for lane group 'batch'"):
        make_scheduler(lane_groups=groups, service_model={"interactive": fast})


def test_simulator_refuses_the_same_jobs() -> None:
    """Driven like the simulator: a burst beyond what fits is refused, the rest meet it."""
    sched = make_scheduler(lanes=1, admission={"interactive": ON})
    jobs = [interactive(i) for i in range(30)]
    admitted = []
    for job in jobs:
        try:
            sched.submit(job, 0.0)
            admitted.append(job)
        except PredictedLate:
            job.outcome = "rejected"
    assert len(admitted) == 9
    now = 0.0
    while sched.pending:  # one lane: run each dispatch to its predicted end
        [d] = sched.poll(now)
        now += SERVICE.predict(d.workload, d.backend, d.precision, d.samples)
        sched.complete(d, now)
    assert all(j.slo_met for j in admitted)
