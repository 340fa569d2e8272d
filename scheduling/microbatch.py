"""Micro-batching bookkeeping: groups of compatible batchable jobs and their windows.

A group is every queued job of a batchable class with the same (workload,
backend, precision). A batchable job is *held* until its own window
(enqueue + window) ends or its group holds a full batch (`Scheduler.ready`
decides, from the counts kept here). Windows sit in a queue in enqueue order so
that the next wake-up is known without a scan: a batching window waits on a
deadline, never on a poll loop.

Nothing here keeps a job once it has left the queue: members are removed when
their last sample is dispatched (or dropped), and the window queue holds job ids,
not jobs, and is pruned of ended windows at every add and wake-up query. A
finished job's input tensor must never outlive its request.
"""

from __future__ import annotations

from collections import deque

from scheduling.config import MicroBatchConfig
from scheduling.job import Job

#: (workload, backend, precision): jobs in one group may share a dispatch.
GroupKey = tuple[str, str, str]


class MicroBatcher:
    """Members, queued samples and window deadlines of every batchable group."""

    def __init__(self, config: MicroBatchConfig) -> None:
        #: Classes that may be merged; empty when micro-batching is off.
        self.classes: frozenset[str] = frozenset(config.classes if config.enabled else ())
        #: Window length in seconds.
        self.window: float = config.window_ms / 1e3
        #: Queued batchable jobs per group, in submit order.
        self.members: dict[GroupKey, list[Job]] = {}
        #: Queued (not yet dispatched) samples per group.
        self.samples: dict[GroupKey, int] = {}
        # (window end, job id) in enqueue order. The window length is fixed and jobs
        # are added at non-decreasing times, so the ends are sorted: a deque, not a heap.
        self._windows: deque[tuple[float, int]] = deque()
        #: Ids of queued batchable jobs (their window may still matter).
        self._queued: set[int] = set()

    def add(self, job: Job, key: GroupKey, now: float) -> None:
        """A batchable job entered the queue at `now`."""
        members = self.members.get(key)
        if members is None:
            members = self.members[key] = []
            self.samples[key] = 0
        members.append(job)
        self.samples[key] += job.remaining
        self._queued.add(job.id)
        if self.window > 0:
            self._prune(now)
            self._windows.append((now + self.window, job.id))

    def took(self, key: GroupKey, job: Job, count: int) -> None:
        """`count` samples of `job` left the queue in a dispatch (before remaining drops)."""
        self.samples[key] -= count
        if count == job.remaining:
            self.members[key].remove(job)
            self._queued.discard(job.id)

    def drop(self, key: GroupKey, job: Job) -> None:
        """The job's queued samples leave without running (cancel, shed, failure)."""
        self.took(key, job, job.remaining)

    def next_expiry(self, now: float) -> float | None:
        """The earliest window end after `now` of a still-queued job, if any."""
        self._prune(now)
        return self._windows[0][0] if self._windows else None

    def _prune(self, now: float) -> None:
        # Ended windows and dispatched jobs are finished business: a job whose
        # window ended is ready by the clock and needs no wake-up any more.
        windows, queued = self._windows, self._queued
        while windows and (windows[0][0] <= now or windows[0][1] not in queued):
            windows.popleft()
