"""Micro-batching windows, step by step on a fake clock (poll at chosen times)."""

from __future__ import annotations

import pytest

from tests.factories import drive, make_job, make_scheduler

ms = 1e-3


def ids(dispatch):
    return [p.job.id for p in dispatch.parts]


def test_batch_job_waits_until_its_window_ends() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10, lanes=2)
    a = make_job(id=0, arrival=0.0)
    sched.submit(a, 0.0)
    assert sched.poll(0.0) == []
    assert sched.next_wakeup(0.0) == pytest.approx(0.010)
    b = make_job(id=1, arrival=0.004)
    sched.submit(b, 0.004)
    assert sched.poll(0.004) == []
    assert sched.poll(0.0099) == []
    assert sched.next_wakeup(0.004) == pytest.approx(0.010)  # A's window, not B's
    [d] = sched.poll(0.010)
    assert ids(d) == [0, 1]  # B rides along before its own window ends
    assert d.samples == 2 and d.lane == 0 and d.start == 0.010
    assert a.start == b.start == 0.010
    assert a.microbatch_id == b.microbatch_id == d.id
    assert d.tokens == 80 + 4 * 2


def test_full_batch_goes_at_once() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10, max_batch=4)
    sched.submit(make_job(id=0, samples=2, arrival=0.0), 0.0)
    assert sched.poll(0.0) == []
    sched.submit(make_job(id=1, samples=2, arrival=0.001), 0.001)
    [d] = sched.poll(0.001)
    assert ids(d) == [0, 1] and d.samples == 4


def test_merged_dispatch_is_capped_by_max_dispatch_samples() -> None:
    jobs = [make_job(id=i, arrival=0.0) for i in range(6)]
    trace = drive(make_scheduler(microbatch=True, window_ms=10, max_batch=8, split=4), jobs)
    # 6 queued ≥ cap 4: the first four go at once; the last two wait for the
    # lane (busy until 14 ms), by which time their window (10 ms) is over.
    [(d0, end0), (d1, _)] = trace.dispatches
    assert ids(d0) == [0, 1, 2, 3] and d0.start == 0.0 and end0 == pytest.approx(14 * ms)
    assert ids(d1) == [4, 5] and d1.start == pytest.approx(14 * ms)


def test_companions_join_whole_first_fit() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10, max_batch=4)
    sched.submit(make_job(id=0, samples=2, arrival=0.0), 0.0)
    sched.submit(make_job(id=1, samples=3, arrival=0.0), 0.0)
    sched.submit(make_job(id=2, samples=2, arrival=0.0), 0.0)
    # Full (7 ≥ 4): job 0 leads; job 1 (3) does not fit the 2 left, job 2 does.
    [d] = sched.poll(0.0)
    assert ids(d) == [0, 2] and d.samples == 4
    # Job 1 alone (3 < 4) waits for its window.
    assert sched.poll(0.0) == []


def test_interactive_is_not_held() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10)
    sched.submit(make_job(id=0, job_class="interactive"), 0.0)
    [d] = sched.poll(0.0)
    assert ids(d) == [0] and d.start == 0.0
    assert sched.next_wakeup(0.0) is None


def test_interactive_never_merged_unless_configured() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0, lanes=2)
    sched.submit(make_job(id=0, job_class="interactive"), 0.0)
    sched.submit(make_job(id=1, job_class="interactive"), 0.0)
    assert [ids(d) for d in sched.poll(0.0)] == [[0], [1]]


def test_interactive_held_and_merged_when_configured() -> None:
    sched = make_scheduler(
        policy="priority_slo",
        microbatch=True,
        window_ms=10,
        batch_classes=("interactive", "batch"),
    )
    sched.submit(make_job(id=0, job_class="batch", arrival=0.0), 0.0)
    sched.submit(make_job(id=1, job_class="interactive", arrival=0.002), 0.002)
    assert sched.poll(0.002) == []
    assert sched.next_wakeup(0.002) == pytest.approx(0.010)
    [d] = sched.poll(0.010)
    # The batch job's window ended, so it leads; the interactive one rides along.
    assert ids(d) == [0, 1]


def test_incompatible_jobs_are_not_merged() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10, lanes=4)
    sched.submit(make_job(id=0, workload="resnet18"), 0.0)
    sched.submit(make_job(id=1, workload="resnet50"), 0.0)
    sched.submit(make_job(id=2, workload="resnet18", precision="fp16"), 0.0)
    sched.submit(make_job(id=3, workload="resnet18", backend="onnxruntime"), 0.0)
    sched.submit(make_job(id=4, workload="resnet18"), 0.0)
    started = sched.poll(0.010)
    assert sorted(ids(d) for d in started) == [[0, 4], [1], [2], [3]]
    assert next(d for d in started if ids(d) == [2]).tokens == 59  # ceil((80 + 4) × 0.7)


def test_disabled_micro_batching_dispatches_each_job_alone_and_at_once() -> None:
    sched = make_scheduler(microbatch=False, lanes=2)
    sched.submit(make_job(id=0), 0.0)
    sched.submit(make_job(id=1), 0.0)
    assert [ids(d) for d in sched.poll(0.0)] == [[0], [1]]


def test_window_zero_merges_what_is_queued() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0)
    sched.submit(make_job(id=0), 0.0)
    [d0] = sched.poll(0.0)  # alone: nothing to wait for
    sched.submit(make_job(id=1), 0.001)
    sched.submit(make_job(id=2), 0.002)
    assert sched.poll(0.002) == []  # the only lane is busy
    assert sched.next_wakeup(0.002) is None
    sched.complete(d0, 0.011)
    [d1] = sched.poll(0.011)
    assert ids(d1) == [1, 2]


def test_no_wakeup_while_every_lane_is_busy() -> None:
    sched = make_scheduler(microbatch=True, window_ms=10)
    sched.submit(make_job(id=0, job_class="interactive"), 0.0)
    sched.poll(0.0)
    sched.submit(make_job(id=1), 0.001)
    assert sched.next_wakeup(0.001) is None


# Deadline-aware micro-batches: the service model is 10 ms + 1 ms per sample.


def test_companion_that_would_make_the_head_late_stays_out() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0, max_batch=64, split=64)
    head = make_job(id=0, samples=4, arrival=0.0, slo=0.020)  # alone: 14 ms, within 20
    big = make_job(id=1, samples=16, arrival=0.0)  # with it: 30 ms, head late
    small = make_job(id=2, samples=4, arrival=0.0)  # with it: 18 ms, fine
    for job in (head, big, small):
        sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert ids(d) == [0, 2]  # the largest micro-batch that still meets the tightest deadline
    assert d.samples == 8


def test_companion_deadlines_tighten_the_batch_too() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0, max_batch=64, split=64)
    head = make_job(id=0, samples=4, arrival=0.0)  # 1 s SLO
    tight = make_job(id=1, samples=4, arrival=0.0, slo=0.020)  # 18 ms with the head
    late_joiner = make_job(id=2, samples=8, arrival=0.0)  # 26 ms: would make `tight` late
    for job in (head, tight, late_joiner):
        sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert ids(d) == [0, 1]


def test_a_member_that_is_lost_anyway_does_not_shrink_the_batch() -> None:
    sched = make_scheduler(microbatch=True, window_ms=0, max_batch=64, split=64)
    head = make_job(id=0, samples=4, arrival=0.0, slo=0.005)  # 14 ms even alone: late anyway
    others = [make_job(id=i, samples=8, arrival=0.0) for i in (1, 2)]
    for job in (head, *others):
        sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert ids(d) == [0, 1, 2]


def test_without_a_service_model_batches_fill_to_the_cap() -> None:
    sched = make_scheduler(service_model=None, microbatch=True, window_ms=0, split=64)
    head = make_job(id=0, samples=4, arrival=0.0, slo=0.020)
    big = make_job(id=1, samples=16, arrival=0.0)
    for job in (head, big):
        sched.submit(job, 0.0)
    [d] = sched.poll(0.0)
    assert ids(d) == [0, 1]
