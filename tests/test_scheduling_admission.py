"""Admission by predicted completion, shedding in the queue and at dispatch, lane groups.

Fake clock, fixed service times (10 ms + 1 ms per sample): every expected number
below is added up by hand.
"""

from __future__ import annotations

import pytest

from scheduling.admission import Forecast, check_admission
from scheduling.errors import PredictedLate
from scheduling.service_time import FixedServiceTime
from tests.factories import SERVICE, make_job, make_scheduler

#: Refuse and shed, planning at the 0.95 quantile whatever the load (`loaded: 0`).
ON = {"refuse_late": True, "shed_late": True, "quantile": 0.95, "loaded": 0.0}
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


class Planned(FixedServiceTime):
    """A model whose planning estimate is `factor` × its mean (a wide observed spread)."""

    def __init__(self, factor: float) -> None:
        super().__init__({"*": (10.0, 1.0)})
        self.factor = factor

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        return self.factor * self.predict(workload, backend, precision, samples)


def test_a_job_that_would_start_at_once_is_refused_only_if_its_mean_misses() -> None:
    """A plan inflated past the SLO must not refuse work an idle lane could do: idle
    lanes would teach the model nothing and the refusals would never stop."""
    sched = make_scheduler(lanes=1, service_model=Planned(20.0), admission={"interactive": ON})
    job = interactive(0, slo=0.1)  # plan 220 ms > 100 ms, mean 11 ms fits
    sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    with pytest.raises(PredictedLate):  # behind a running job it would start later: refused
        sched.submit(interactive(1, slo=0.1), 0.0)
    sched.complete(d, 0.011)
    with pytest.raises(PredictedLate):  # its mean alone (11 ms) misses a 5 ms SLO
        sched.submit(interactive(2, t=0.011, slo=0.005), 0.011)


@pytest.mark.parametrize(("quantile", "admitted"), [(0.95, True), (0.99, False)])
def test_the_class_quantile_sets_how_sure_admission_must_be(
    quantile: float, admitted: bool
) -> None:
    """Two 11 ms dispatches in a chain, each with a 5.5 ms planning excess: the 0.95
    forecast is 22 + √2·5.5 ≈ 29.8 ms, the 0.99 one 22 + √2·5.5·1.414 ≈ 33 ms."""
    rules = {"interactive": {**ON, "quantile": quantile}}
    sched = make_scheduler(lanes=1, service_model=Planned(1.5), admission=rules)
    sched.submit(interactive(0), 0.0)
    sched.poll(0.0)
    job = interactive(1, slo=0.031)
    if admitted:
        sched.submit(job, 0.0)
        assert job.predicted_end == pytest.approx(0.022 + 2**0.5 * 0.0055)
    else:
        with pytest.raises(PredictedLate):
            sched.submit(job, 0.0)


def test_the_drivers_hop_lengthens_every_dispatch_and_both_ends() -> None:
    sched = make_scheduler(lanes=1, admission={"interactive": ON})
    sched.hop_s = 0.002
    sched.submit(interactive(0), 0.0)
    sched.poll(0.0)
    job = interactive(1)
    sched.submit(job, 0.0)  # running (11 ms) + its own 11 + 2 ms hop
    assert job.predicted_end == pytest.approx(0.011 + 0.013)


def test_a_lag_spike_does_not_refuse_work_idle_lanes_would_finish() -> None:
    """The hop is a p95 of event-loop lag: on idle lanes only the mean must fit, so a
    hop larger than the SLO does not refuse an 11 ms job; behind a busy lane it does."""
    sched = make_scheduler(lanes=1, admission={"interactive": ON})
    sched.submit(interactive(0), 0.0)
    [d] = sched.poll(0.0)
    sched.complete(d, 0.011)  # ran just now: no probe, the mean decides
    sched.hop_s = 0.2
    job = interactive(1, t=0.011, slo=0.05)
    sched.submit(job, 0.011)
    [d] = sched.poll(0.011)
    assert d.jobs == [job]
    with pytest.raises(PredictedLate):
        sched.submit(interactive(2, t=0.011, slo=0.05), 0.011)


def test_idle_lanes_probe_once_per_probe_s_when_even_the_mean_misses() -> None:
    """Mean 11 ms, SLO 5 ms: every forecast misses. Refusing for ever would keep the
    lanes idle and the model stale; a probe per probe_s lets it relearn."""
    rules = {"interactive": {**ON, "probe_s": 1.0}}
    sched = make_scheduler(lanes=1, admission=rules)
    first = interactive(0, slo=0.005)
    sched.submit(first, 0.0)  # never ran: probe
    [d] = sched.poll(0.0)
    sched.complete(d, 0.011)
    with pytest.raises(PredictedLate):  # idle, but it ran 0.5 s ago
        sched.submit(interactive(1, t=0.5, slo=0.005), 0.5)
    probe = interactive(2, t=1.02, slo=0.005)
    sched.submit(probe, 1.02)
    assert sched.poll(1.02)[0].jobs == [probe]


def test_under_light_load_only_a_job_late_on_average_is_refused() -> None:
    """loaded 0.5: a lone arrival (load ≈ 0) behind a running job is admitted although
    its 0.95 forecast misses, since its mean forecast (22 ms) fits the 25 ms SLO."""
    rules = {"interactive": {**ON, "loaded": 0.5}}
    sched = make_scheduler(lanes=1, service_model=Planned(1.5), admission=rules)
    sched.submit(interactive(0), 0.0)
    sched.poll(0.0)
    job = interactive(1, slo=0.025)
    sched.submit(job, 0.0)
    assert job.predicted_end == pytest.approx(0.022)
    with pytest.raises(PredictedLate):  # its mean forecast (33 ms) misses too
        sched.submit(interactive(2, slo=0.025), 0.0)


def test_a_refusal_names_the_finish_its_decision_used() -> None:
    # 90 ms of work fits a 100 ms deadline; 15 ms of event-loop margin per answer does
    # not: the refusal says 105 ms, never a finish inside the deadline.
    job = make_job(job_class="interactive", arrival=0.0, slo=0.100)
    with pytest.raises(PredictedLate) as refused:
        check_admission(job, 0.0, 0.015, Forecast(0.0, 0.090), alone=0.090, idle=False)
    assert refused.value.predicted_finish == pytest.approx(0.105)
    assert "105 ms after arrival, 5 ms past its 100 ms deadline" in str(refused.value)
