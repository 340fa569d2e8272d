"""Test factories for the scheduling core (after vLLM's tests/v1/core/utils.py).

`make_scheduler(**knobs)` builds a Scheduler from flat knobs, `make_job` and
`make_jobs` build jobs with readable defaults, and `drive` runs a scheduler on
a fake clock (plain floats, never sleeping) the way the simulator does, so
hand-computed traces can be checked against the real state machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from heapq import heappop, heappush
from typing import Any

from scheduling.config import (
    ClassAdmission,
    DynamicWeights,
    MicroBatchConfig,
    SchedulerConfig,
    TokenConfig,
)
from scheduling.job import DEFAULT_SLO_S, Dispatch, Job, JobClass
from scheduling.scheduler import Scheduler
from scheduling.service_time import FixedServiceTime, ServiceTimeModel

#: Token bases of the catalogue models (workloads/specs.py).
TOKEN_BASES: dict[str, int] = {"resnet18": 80, "resnet50": 160, "vit_b_16": 260, "tiny": 10}

#: 10 ms + 1 ms per sample for every workload: easy to add up by hand.
SERVICE = FixedServiceTime.linear(10.0, 1.0)

_ids = itertools.count(10_000)


def make_config(
    *,
    policy: str = "fifo",
    lanes: int = 1,
    capacity: int = 1000,
    microbatch: bool = False,
    window_ms: float = 10.0,
    max_batch: int = 128,
    batch_classes: tuple[JobClass, ...] = ("batch",),
    split: int | None = 32,
    queue_limit: Mapping[JobClass, int] | None = None,
    shed_late: bool = False,
    weights: Mapping[str, float] | None = None,
    max_dispatch_ms: float | None = None,
    admission: Mapping[JobClass, Mapping[str, Any]] | None = None,
    lane_groups: list[dict[str, Any]] | None = None,
) -> SchedulerConfig:
    """A SchedulerConfig from flat knobs; micro-batching is off unless asked for.

    Admission is off unless asked for (`admission=` per class); `shed_late=True`
    sheds hopeless jobs of every class (what the core did before admission rules).
    """
    if lane_groups is not None:
        lanes = sum(g["count"] for g in lane_groups)
    if admission is None:
        rules = ClassAdmission(shed_late=shed_late)
        admission = {c: rules.model_dump() for c in ("interactive", "batch")}
    return SchedulerConfig(
        policy=policy,  # type: ignore[arg-type]
        lanes=lanes,
        tokens=TokenConfig(capacity=capacity),
        microbatch=MicroBatchConfig(
            enabled=microbatch, window_ms=window_ms, max_batch=max_batch, classes=batch_classes
        ),
        max_dispatch_samples=split,
        weights=DynamicWeights(**(weights or {})),
        queue_limit=dict(queue_limit) if queue_limit is not None else None,
        admission={c: ClassAdmission(**dict(r)) for c, r in admission.items()},
        max_dispatch_ms=max_dispatch_ms,
        lane_groups=lane_groups,  # type: ignore[arg-type]
    )


def make_scheduler(
    *,
    service_model: ServiceTimeModel | None = SERVICE,
    token_bases: Mapping[str, int] = TOKEN_BASES,
    **knobs: Any,
) -> Scheduler:
    """A Scheduler built by `make_config(**knobs)`."""
    return Scheduler(make_config(**knobs), token_bases, service_model)


def make_job(
    *,
    id: int | None = None,
    workload: str = "resnet18",
    backend: str = "pytorch",
    precision: str = "fp32",
    job_class: JobClass = "batch",
    samples: int = 1,
    arrival: float = 0.0,
    slo: float | None = None,
) -> Job:
    """One job; the deadline is arrival + slo (class default when not given)."""
    slo = DEFAULT_SLO_S[job_class] if slo is None else slo
    job_id = next(_ids) if id is None else id
    return Job(job_id, workload, backend, precision, job_class, samples, arrival, arrival + slo)


def make_jobs(n: int, *, start: float = 0.0, gap: float = 0.0, **fields: Any) -> list[Job]:
    """`n` jobs with ids 0..n-1 arriving at start, start + gap, ... ."""
    return [make_job(id=i, arrival=start + i * gap, **fields) for i in range(n)]


class Trace:
    """What `drive` saw: every dispatch with its end time, and finished jobs."""

    def __init__(self) -> None:
        self.dispatches: list[tuple[Dispatch, float]] = []
        self.finished: list[Job] = []

    def samples(self) -> list[int]:
        """Samples per dispatch, in start order."""
        return [d.samples for d, _ in self.dispatches]


def drive(
    sched: Scheduler,
    jobs: Iterable[Job],
    service: ServiceTimeModel = SERVICE,
    *,
    until: float = float("inf"),
    on_poll: Callable[[Scheduler, float, list[Dispatch]], None] | None = None,
) -> Trace:
    """Run `jobs` (submitted at their arrival) to completion on a fake clock.

    Same event order as the simulator: completions, then arrivals, then poll.
    """
    pending = sorted(jobs, key=lambda j: (j.arrival, j.id))
    trace = Trace()
    events: list[tuple[float, int, Dispatch]] = []
    i, wake, seq = 0, None, 0
    while True:
        candidates = [t for t in (wake,) if t is not None]
        if events:
            candidates.append(events[0][0])
        if i < len(pending):
            candidates.append(pending[i].arrival)
        if not candidates or min(candidates) > until:
            return trace
        now = min(candidates)
        while events and events[0][0] <= now:
            trace.finished += sched.complete(heappop(events)[2], now)
        while i < len(pending) and pending[i].arrival <= now:
            sched.submit(pending[i], now)
            i += 1
        started = sched.poll(now)
        if on_poll is not None:
            on_poll(sched, now, started)
        for d in started:
            end = now + service.predict(d.workload, d.backend, d.precision, d.samples)
            trace.dispatches.append((d, end))
            heappush(events, (end, seq, d))
            seq += 1
        trace.finished += sched.take_shed()
        wake = sched.next_wakeup(now)
