"""Micro-batching bookkeeping: groups of compatible batchable jobs and their windows.

A group is every queued job of a batchable class with the same (workload,
backend, precision). A batchable job is *held* until its own window
(enqueue + window) ends or its group holds a full batch (`Scheduler.ready`
decides, from the counts kept here). Windows sit in a heap so that the next
wake-up is known without a scan: a batching window waits on a deadline, never
on a poll loop.
"""

from __future__ import annotations

from heapq import heappop, heappush

from scheduling.config import MicroBatchConfig
from scheduling.job import Job

#: (workload, backend, precision): jobs in one group may share a dispatch.
GroupKey = tuple[str, str, str]


def group_key(job: Job) -> GroupKey:
    """The micro-batch group a job belongs to."""
    return (job.workload, job.backend, job.precision)


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
        # (window end, id, job): ids are unique, so Jobs are never compared.
        self._windows: list[tuple[float, int, Job]] = []

    def batchable(self, job: Job) -> bool:
        """Whether the job may be merged and held for its window."""
        return job.job_class in self.classes

    def add(self, job: Job, key: GroupKey, now: float) -> None:
        """A batchable job entered the queue at `now`."""
        members = self.members.get(key)
        if members is None:
            members = self.members[key] = []
            self.samples[key] = 0
        members.append(job)
        self.samples[key] += job.remaining
        if self.window > 0:
            heappush(self._windows, (now + self.window, job.id, job))

    def took(self, key: GroupKey, job: Job, count: int) -> None:
        """`count` samples of `job` left the queue in a dispatch (before remaining drops)."""
        self.samples[key] -= count
        if count == job.remaining:
            self.members[key].remove(job)

    def drop(self, key: GroupKey, job: Job) -> None:
        """The job's queued samples leave without running (cancel, shed, failure)."""
        self.took(key, job, job.remaining)

    def next_expiry(self, now: float) -> float | None:
        """The earliest window end after `now` of a still-queued job, if any."""
        windows = self._windows
        # Ended windows and dispatched jobs are finished business: a job whose
        # window ended is ready by the clock and needs no wake-up any more.
        while windows and (windows[0][0] <= now or not windows[0][2].remaining):
            heappop(windows)
        return windows[0][0] if windows else None
