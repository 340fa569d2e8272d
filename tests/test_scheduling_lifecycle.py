"""fail, cancel, shedding, queue limits and the read-only views."""

from __future__ import annotations

import pytest

from scheduling.errors import QueueFull
from tests.factories import drive, make_job, make_scheduler


def test_failed_dispatch_fails_every_job_in_it_once() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0)
    a, b = make_job(id=0), make_job(id=1)
    sched.submit(a, 0.0)
    sched.submit(b, 0.0)
    [d] = sched.poll(0.0)
    assert sched.tokens_in_use == d.tokens and sched.busy_lanes == 1
    failed = sched.fail(d, 0.005, "worker 0 crashed")
    assert failed == [a, b]
    assert all(j.outcome == "error" and j.end == 0.005 for j in failed)
    assert a.error == "worker 0 crashed"
    assert (sched.tokens_in_use, sched.busy_lanes, sched.in_flight) == (0, 0, 0)
    with pytest.raises(ValueError, match="not running"):
        sched.complete(d, 0.006)


def test_failure_drops_the_queued_parts_and_ignores_the_running_ones() -> None:
    sched = make_scheduler(split=32, lanes=2)
    job = make_job(samples=100)
    sched.submit(job, 0.0)
    d0, d1 = sched.poll(0.0)
    assert sched.pending == 1  # 36 samples still queued
    assert sched.fail(d0, 0.010, "oom") == [job]
    assert sched.pending == 0 and sched.queue_depth("batch") == 0
    assert sched.poll(0.010) == []
    assert sched.complete(d1, 0.042) == []  # already reported as an error
    assert (job.outcome, job.end) == ("error", 0.010)
    assert (sched.tokens_in_use, sched.busy_lanes) == (0, 0)


def test_cancel_a_queued_job_removes_it() -> None:
    sched = make_scheduler()
    running, queued = make_job(id=0), make_job(id=1)
    sched.submit(running, 0.0)
    [d] = sched.poll(0.0)
    sched.submit(queued, 0.001)
    assert sched.queue_depth("batch") == 1
    assert sched.cancel(1, 0.002) is queued
    assert (queued.outcome, queued.end, queued.start) == ("cancelled", 0.002, None)
    assert sched.queue_depth("batch") == 0 and sched.pending == 0
    assert sched.cancel(1, 0.003) is None  # once only
    assert sched.complete(d, 0.011) == [running]
    assert sched.poll(0.011) == []


def test_cancel_a_running_job_reports_it_once_and_keeps_the_lane_until_it_ends() -> None:
    sched = make_scheduler()
    job = make_job(id=7)
    sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert sched.cancel(7, 0.004) is job
    assert job.outcome == "cancelled"
    assert sched.busy_lanes == 1  # a running part cannot be stopped
    assert sched.complete(d, 0.011) == []
    assert sched.busy_lanes == 0 and sched.tokens_in_use == 0


def test_cancel_a_split_job_drops_its_remaining_parts() -> None:
    sched = make_scheduler(split=32)
    job = make_job(id=3, samples=100)
    sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert sched.cancel(3, 0.010) is job
    assert sched.complete(d, 0.042) == []
    assert sched.poll(0.042) == [] and sched.pending == 0


def test_cancel_an_unknown_job_is_none() -> None:
    assert make_scheduler().cancel(12345, 0.0) is None


def test_shed_at_submit_when_even_an_immediate_start_is_too_late() -> None:
    sched = make_scheduler(shed_late=True)
    job = make_job(job_class="interactive", slo=0.005)  # 11 ms of service
    sched.submit(job, 0.0)
    assert sched.pending == 0 and sched.poll(0.0) == []
    assert sched.take_shed() == [job]
    assert (job.outcome, job.end, job.enqueue) == ("shed", 0.0, 0.0)
    assert sched.take_shed() == []


def test_shed_while_queued_when_the_deadline_slips_away() -> None:
    a = make_job(id=0, arrival=0.0)  # runs 0-11 ms
    b = make_job(id=1, job_class="interactive", arrival=0.001, slo=0.015)  # due 16 ms
    trace = drive(make_scheduler(shed_late=True), [a, b])
    # At 11 ms, 11 + 11 = 22 ms > 16 ms: dropped without running.
    assert (b.outcome, b.end, b.start) == ("shed", pytest.approx(0.011), None)
    assert [d.parts[0].job.id for d, _ in trace.dispatches] == [0]
    assert sorted(j.id for j in trace.finished) == [0, 1]


def test_without_shedding_a_late_job_still_runs() -> None:
    a = make_job(id=0, arrival=0.0)
    b = make_job(id=1, job_class="interactive", arrival=0.001, slo=0.015)
    drive(make_scheduler(), [a, b])
    assert b.outcome == "ok" and not b.slo_met


def test_shed_companion_is_left_out_of_the_batch() -> None:
    sched = make_scheduler(shed_late=True, microbatch=True, window_ms=10)
    ok = make_job(id=0, arrival=0.0, slo=1.0)
    doomed = make_job(id=1, arrival=0.0, slo=0.015)  # 0.010 + 0.012 > 0.015 at the window
    sched.submit(ok, 0.0)
    sched.submit(doomed, 0.0)
    [d] = sched.poll(0.010)
    assert [p.job.id for p in d.parts] == [0]
    assert sched.take_shed() == [doomed]


def test_queue_limit_per_class() -> None:
    sched = make_scheduler(policy="priority_slo", queue_limit={"batch": 2})
    sched.submit(make_job(id=0), 0.0)
    [d] = sched.poll(0.0)  # running, no longer queued
    sched.submit(make_job(id=1), 0.0)
    sched.submit(make_job(id=2), 0.0)
    with pytest.raises(QueueFull) as info:
        sched.submit(make_job(id=3), 0.0)
    assert (info.value.job_class, info.value.limit) == ("batch", 2)
    assert "'batch'" in str(info.value) and "2" in str(info.value)
    sched.submit(make_job(id=4, job_class="interactive"), 0.0)  # other class: no limit
    sched.complete(d, 0.011)
    [d] = sched.poll(0.011)  # the interactive job goes first and leaves the queue
    assert d.parts[0].job.id == 4
    assert sched.queue_depth("batch") == 2 and sched.queue_depth("interactive") == 0


def test_queue_limit_frees_up_when_jobs_dispatch() -> None:
    sched = make_scheduler(queue_limit={"batch": 1})
    sched.submit(make_job(id=0), 0.0)
    with pytest.raises(QueueFull):
        sched.submit(make_job(id=1), 0.0)
    sched.poll(0.0)
    sched.submit(make_job(id=2), 0.0)  # the first one left the queue


def test_duplicate_submit_and_double_complete_are_errors() -> None:
    sched = make_scheduler()
    job = make_job(id=0)
    sched.submit(job, 0.0)
    with pytest.raises(ValueError, match="job 0"):
        sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    sched.complete(d, 0.011)
    with pytest.raises(ValueError, match="completed twice"):
        sched.complete(d, 0.012)


def test_views() -> None:
    sched = make_scheduler(lanes=3, capacity=500, microbatch=True, window_ms=10)
    assert (sched.lanes, sched.token_capacity, sched.busy_lanes, sched.tokens_in_use) == (
        3,
        500,
        0,
        0,
    )
    sched.submit(make_job(id=0, job_class="interactive", samples=2), 0.0)
    sched.submit(make_job(id=1), 0.0)
    assert (sched.pending, sched.queue_depth("interactive"), sched.queue_depth("batch")) == (
        2,
        1,
        1,
    )
    [d] = sched.poll(0.0)
    assert (sched.pending, sched.in_flight, sched.busy_lanes, sched.tokens_in_use) == (
        1,
        1,
        1,
        88,
    )
    assert d.tokens == 88
