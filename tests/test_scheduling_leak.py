"""The core keeps no finished job: a job (and the input tensor it carries) is
released as soon as it has an outcome, whatever the policy, batching or ending.

Checked with weak references after a few hundred jobs: the live gateway keeps each
request's input on its Job, so a job the core still references is a leaked tensor
(a soak once grew the server by 2.5 GB this way).
"""

from __future__ import annotations

import gc
import weakref
from heapq import heappop, heappush

import numpy as np
import pytest

from scheduling.job import Dispatch, Job
from tests.factories import SERVICE, make_job, make_scheduler

POLICIES = ("fifo", "priority_slo", "batch_aware", "dynamic")


def _run_and_watch(policy: str, *, n: int, cancel_every: int = 0) -> list[weakref.ref[Job]]:
    """Drive `n` mixed jobs with inputs to completion; weak references to all of them."""
    sched = make_scheduler(
        policy=policy, lanes=2, microbatch=True, window_ms=10.0, split=8, queue_limit=None
    )
    refs: list[weakref.ref[Job]] = []
    events: list[tuple[float, int, Dispatch]] = []
    seq = 0
    now = 0.0
    for i in range(n):
        now = i * 0.004
        while events and events[0][0] <= now:
            _, _, done = heappop(events)
            sched.complete(done, done.start + 0.001)
        job = make_job(
            id=i,
            job_class="batch" if i % 3 else "interactive",
            samples=1 + i % 5,
            arrival=now,
        )
        job.payload = np.zeros(1024, dtype=np.float32)  # what the gateway keeps on a job
        refs.append(weakref.ref(job))
        sched.submit(job, now)
        if cancel_every and i % cancel_every == 0:
            sched.cancel(job.id, now)
        del job
        for d in sched.poll(now):
            end = now + SERVICE.predict(d.workload, d.backend, d.precision, d.samples)
            heappush(events, (end, seq, d))
            seq += 1
        sched.next_wakeup(now)
    # Drain: run every remaining event and window to the end.
    while events or sched.pending:
        wake = sched.next_wakeup(now)
        times = [t for t in (wake, events[0][0] if events else None) if t is not None]
        now = max(now, min(times)) if times else now + 0.01
        while events and events[0][0] <= now:
            sched.complete(heappop(events)[2], now)
        for d in sched.poll(now):
            end = now + SERVICE.predict(d.workload, d.backend, d.precision, d.samples)
            heappush(events, (end, seq, d))
            seq += 1
    sched.take_shed()
    assert sched.pending == 0 and sched.in_flight == 0
    # The scheduler itself stays alive: it must not be what holds the jobs.
    _keep_alive.append(sched)
    return refs


_keep_alive: list[object] = []


@pytest.fixture(autouse=True)
def _clear_kept() -> None:
    _keep_alive.clear()


@pytest.mark.parametrize("policy", POLICIES)
def test_no_finished_job_is_referenced(policy: str) -> None:
    refs = _run_and_watch(policy, n=300)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} of {len(refs)} finished jobs still referenced"


@pytest.mark.parametrize("policy", POLICIES)
def test_cancelled_jobs_are_released_too(policy: str) -> None:
    refs = _run_and_watch(policy, n=200, cancel_every=4)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} of {len(refs)} jobs still referenced"


def test_stale_heap_entries_stay_bounded_while_jobs_queue() -> None:
    """Jobs that leave from inside the priority heap (here: cancelled behind a queued
    head while the only lane is busy) must not stay in it as stale entries."""
    sched = make_scheduler(policy="priority_slo", lanes=1)
    sched.submit(make_job(id=0, job_class="batch", samples=1, arrival=0.0), 0.0)
    assert sched.poll(0.0)  # the lane is now busy for the rest of the test
    head = make_job(id=1, job_class="interactive", samples=1, arrival=0.0)
    sched.submit(head, 0.0)
    for i in range(2, 400):
        job = make_job(id=i, job_class="batch", samples=1, arrival=0.0)
        sched.submit(job, 0.0)
        sched.cancel(job.id, 0.0)
    assert sched.pending == 1
    policy = sched._groups[0].policy
    assert len(policy) <= 2 * sched.pending + 32  # type: ignore[arg-type]
