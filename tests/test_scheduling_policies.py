"""Hand-computed traces, one policy at a time.

Service time is 10 ms + 1 ms per sample (tests/factories.SERVICE) unless a
test says otherwise; every expected number below is added up by hand.
"""

from __future__ import annotations

import pytest

from scheduling.config import SchedulerConfig
from scheduling.policies import POLICIES, make_policy
from scheduling.service_time import FixedServiceTime
from tests.factories import drive, make_job, make_scheduler

ms = 1e-3


def by_id(jobs):
    return {j.id: j for j in jobs}


def three_jobs():
    # A runs at once; C (batch) and B (interactive) queue behind it.
    return [
        make_job(id=0, job_class="batch", arrival=0.000),
        make_job(id=1, job_class="batch", arrival=0.001),
        make_job(id=2, job_class="interactive", arrival=0.002),
    ]


def test_registry_names_every_policy() -> None:
    assert set(POLICIES) == {"fifo", "priority_slo", "batch_aware", "dynamic"}
    for name in POLICIES:
        assert make_policy(name, SchedulerConfig(policy=name)).name == name
    with pytest.raises(ValueError, match=r"unknown policy 'lifo'.*batch_aware"):
        make_policy("lifo", SchedulerConfig())


def test_fifo_runs_in_arrival_order() -> None:
    jobs = by_id(three_jobs())
    drive(make_scheduler(policy="fifo"), jobs.values())
    assert [(jobs[i].start, jobs[i].end) for i in (0, 1, 2)] == [
        (0.0, pytest.approx(11 * ms)),
        (pytest.approx(11 * ms), pytest.approx(22 * ms)),
        (pytest.approx(22 * ms), pytest.approx(33 * ms)),
    ]
    assert {j.lane for j in jobs.values()} == {0}
    assert all(j.outcome == "ok" for j in jobs.values())


def test_priority_slo_puts_interactive_first() -> None:
    jobs = by_id(three_jobs())
    drive(make_scheduler(policy="priority_slo"), jobs.values())
    assert jobs[2].start == pytest.approx(11 * ms)  # the interactive one jumps the batch one
    assert jobs[2].end == pytest.approx(22 * ms)
    assert jobs[1].start == pytest.approx(22 * ms)
    assert jobs[1].end == pytest.approx(33 * ms)


@pytest.mark.parametrize("job_class", ["batch", "interactive"])
def test_priority_slo_is_edf_within_a_class(job_class: str) -> None:
    jobs = by_id(
        [
            make_job(id=0, arrival=0.0),
            make_job(id=1, job_class=job_class, arrival=0.001, slo=1.0),  # due 1.001
            make_job(id=2, job_class=job_class, arrival=0.002, slo=0.5),  # due 0.502
        ]
    )
    drive(make_scheduler(policy="priority_slo"), jobs.values())
    assert jobs[2].start == pytest.approx(11 * ms)
    assert jobs[1].start == pytest.approx(22 * ms)


def test_lanes_go_to_the_most_recently_freed_lowest_index_on_ties() -> None:
    jobs = by_id(
        [
            make_job(id=0, samples=20, arrival=0.0),  # lane 0, 0-30 ms
            make_job(id=1, samples=1, arrival=0.0),  # lane 1, 0-11 ms
            make_job(id=2, arrival=0.040),  # both idle: lane 0 freed last (30 > 11 ms), warm
            make_job(id=3, arrival=0.040),  # then lane 1
            make_job(id=4, arrival=0.100),  # both freed at 51 ms: tie, lowest index
        ]
    )
    drive(make_scheduler(policy="fifo", lanes=2), jobs.values())
    assert [jobs[i].lane for i in range(5)] == [0, 1, 0, 1, 0]
    assert jobs[0].end == pytest.approx(30 * ms)
    assert jobs[2].end == jobs[3].end == pytest.approx(51 * ms)


def batch_aware_jobs():
    return [
        make_job(id=0, workload="resnet18", arrival=0.000),  # runs 0-11 ms
        make_job(id=1, workload="resnet50", arrival=0.001),
        make_job(id=2, workload="resnet18", arrival=0.002),
        make_job(id=3, workload="resnet18", arrival=0.003),
    ]


def test_batch_aware_prefers_the_job_with_companions() -> None:
    jobs = by_id(batch_aware_jobs())
    trace = drive(
        make_scheduler(policy="batch_aware", microbatch=True, window_ms=0, max_batch=8),
        jobs.values(),
    )
    # At 11 ms the resnet18 group (2 samples) beats the lone resnet50 job.
    assert [[p.job.id for p in d.parts] for d, _ in trace.dispatches] == [[0], [2, 3], [1]]
    assert jobs[2].start == jobs[3].start == pytest.approx(11 * ms)
    assert jobs[2].end == pytest.approx(23 * ms)  # 10 + 2 × 1 ms
    assert jobs[1].start == pytest.approx(23 * ms)
    assert jobs[1].end == pytest.approx(34 * ms)


def test_fifo_with_same_jobs_keeps_arrival_order() -> None:
    jobs = by_id(batch_aware_jobs())
    trace = drive(
        make_scheduler(policy="fifo", microbatch=True, window_ms=0, max_batch=8), jobs.values()
    )
    assert [[p.job.id for p in d.parts] for d, _ in trace.dispatches] == [[0], [1], [2, 3]]


SLOW = FixedServiceTime.linear(100.0, 0.0)  # 100 ms whatever the size


def urgent_batch_jobs(batch_slo: float = 0.210):
    return [
        make_job(id=0, arrival=0.0),  # runs 0-100 ms
        make_job(id=1, job_class="batch", arrival=0.001, slo=batch_slo),  # due 211 ms
        make_job(id=2, job_class="interactive", arrival=0.090, slo=0.500),  # due 590 ms
    ]


def test_dynamic_lets_an_urgent_batch_job_overtake_a_relaxed_interactive_one() -> None:
    # At 100 ms: batch slack = 211 - 100 - 100 = 11 ms of 210 → urgency 0.95 → score
    # 1.90 - 0.1 - 0.0084; interactive slack 390 ms of 500 → urgency 0.22 → score
    # 1 + 0.44 - 0.1 - 0.0084.
    jobs = by_id(urgent_batch_jobs())
    drive(make_scheduler(policy="dynamic", service_model=SLOW), jobs.values(), SLOW)
    assert jobs[1].start == pytest.approx(0.100)
    assert jobs[2].start == pytest.approx(0.200)


def test_dynamic_triage_serves_a_savable_job_before_a_lost_one() -> None:
    # Due at 151 ms, the batch job cannot end in time even if started at 100 ms
    # (100 ms of service): it yields to the interactive job, which can still be saved.
    jobs = by_id(urgent_batch_jobs(batch_slo=0.150))
    drive(make_scheduler(policy="dynamic", service_model=SLOW), jobs.values(), SLOW)
    assert jobs[2].start == pytest.approx(0.100)
    assert jobs[1].start == pytest.approx(0.200)


def test_dynamic_without_triage_still_runs_the_lost_job_first() -> None:
    jobs = by_id(urgent_batch_jobs(batch_slo=0.150))
    sched = make_scheduler(policy="dynamic", service_model=SLOW, weights={"triage_slos": 0})
    drive(sched, jobs.values(), SLOW)
    assert jobs[1].start == pytest.approx(0.100)


def test_dynamic_lost_job_ages_back_in_after_its_grace() -> None:
    # Due at 11 ms with a 10 ms SLO, triage lasts until 21 ms (triage_slos = 1): at
    # 100 ms the job has aged back in with urgency 1 and outranks the interactive job.
    jobs = by_id(urgent_batch_jobs(batch_slo=0.010))
    drive(make_scheduler(policy="dynamic", service_model=SLOW), jobs.values(), SLOW)
    assert jobs[1].start == pytest.approx(0.100)


def test_priority_slo_with_same_jobs_serves_interactive_first() -> None:
    jobs = by_id(urgent_batch_jobs())
    drive(make_scheduler(policy="priority_slo", service_model=SLOW), jobs.values(), SLOW)
    assert jobs[2].start == pytest.approx(0.100)
    assert jobs[1].start == pytest.approx(0.200)


def test_dynamic_serves_a_fresh_interactive_job_before_a_fresh_batch_job() -> None:
    jobs = by_id(
        [
            make_job(id=0, arrival=0.0),
            make_job(id=1, job_class="batch", arrival=0.001, slo=1.0),
            make_job(id=2, job_class="interactive", arrival=0.002, slo=0.5),
        ]
    )
    drive(make_scheduler(policy="dynamic", service_model=SLOW), jobs.values(), SLOW)
    assert jobs[2].start == pytest.approx(0.100)
    assert jobs[1].start == pytest.approx(0.200)


def test_dynamic_service_time_weight_is_shortest_job_first() -> None:
    only_service = {
        "interactive": 0.0,
        "urgency": 0.0,
        "batchability": 0.0,
        "service_time": 1.0,
        "token_cost": 0.0,
    }
    jobs = by_id(
        [
            make_job(id=0, arrival=0.0),  # 0-11 ms
            make_job(id=1, samples=20, arrival=0.001),  # 30 ms
            make_job(id=2, samples=1, arrival=0.002),  # 11 ms
        ]
    )
    drive(make_scheduler(policy="dynamic", weights=only_service), jobs.values())
    assert jobs[2].start == pytest.approx(11 * ms)
    assert jobs[1].start == pytest.approx(22 * ms)
    assert jobs[1].end == pytest.approx(52 * ms)


def test_dynamic_token_cost_weight_prefers_cheap_dispatches() -> None:
    only_tokens = {
        "interactive": 0.0,
        "urgency": 0.0,
        "batchability": 0.0,
        "service_time": 0.0,
        "token_cost": 1.0,
    }
    jobs = by_id(
        [
            make_job(id=0, arrival=0.0),
            make_job(id=1, workload="vit_b_16", arrival=0.001),
            make_job(id=2, workload="tiny", arrival=0.002),
        ]
    )
    drive(make_scheduler(policy="dynamic", weights=only_tokens), jobs.values())
    assert jobs[2].start < jobs[1].start


def test_dynamic_without_a_service_model_still_orders_by_urgency() -> None:
    jobs = by_id(
        [
            make_job(id=0, arrival=0.0),
            make_job(id=1, arrival=0.001, slo=1.0),
            make_job(id=2, arrival=0.002, slo=0.2),
        ]
    )
    drive(make_scheduler(policy="dynamic", service_model=None), jobs.values())
    assert jobs[2].start == pytest.approx(11 * ms)
    assert jobs[1].start == pytest.approx(22 * ms)


def test_ties_break_on_arrival_then_id() -> None:
    jobs = by_id([make_job(id=i, arrival=0.0) for i in (5, 3, 4)])
    for policy in POLICIES:
        for job in jobs.values():
            job.enqueue = job.start = job.end = job.outcome = None
            job.lane = job.microbatch_id = None
        trace = drive(make_scheduler(policy=policy), jobs.values())
        assert [d.parts[0].job.id for d, _ in trace.dispatches] == [3, 4, 5], policy
