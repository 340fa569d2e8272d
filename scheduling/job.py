"""Requests and decisions of the scheduling core, as plain dataclasses.

Times are seconds on whatever clock drives the core (monotonic live, virtual
in the simulator); the core never reads a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from scheduling.residency import Swap

JobClass = Literal["interactive", "batch"]
JOB_CLASSES: tuple[JobClass, ...] = ("interactive", "batch")
#: Default SLO per class, seconds.
DEFAULT_SLO_S: dict[str, float] = {"interactive": 0.100, "batch": 1.000}

Outcome = Literal["ok", "shed", "cancelled", "error", "rejected"]


@dataclass(eq=False)
class Job:
    """One request: `samples` inputs of one model that must finish by `deadline`."""

    id: int
    workload: str
    backend: str
    precision: str
    job_class: JobClass
    #: Number of samples (the request's batch size).
    samples: int
    arrival: float
    deadline: float
    #: Opaque to the core: the live gateway keeps the input tensor here.
    payload: Any = None
    #: When the core accepted the job (submit).
    enqueue: float | None = None
    #: When the first part left the queue to run on a lane.
    start: float | None = None
    #: When the last part finished.
    end: float | None = None
    outcome: Outcome | None = None
    #: Lane and micro-batch of the job's last part, for the trace.
    lane: int | None = None
    microbatch_id: int | None = None
    #: Samples not yet handed to a dispatch, and parts still running.
    remaining: int = field(default=-1, repr=False)
    parts_in_flight: int = field(default=0, repr=False)
    #: Admitted as a probe of idle lanes despite its forecast: never shed.
    probe: bool = field(default=False, repr=False)
    #: Why the job ended without "ok" (failure reason, shedding, cancellation).
    error: str | None = None
    #: When admission predicted the job would finish (None: not forecast).
    predicted_end: float | None = None
    #: Predicted service seconds not spent because the job was shed before running.
    saved_s: float = 0.0

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = self.samples

    @property
    def slo(self) -> float:
        """The job's latency budget in seconds."""
        return self.deadline - self.arrival

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def slo_met(self) -> bool:
        return self.outcome == "ok" and self.end is not None and self.end <= self.deadline

    def compatible(self, other: Job) -> bool:
        """Whether two jobs may share a micro-batch (same model, backend, precision)."""
        return (
            self.workload == other.workload
            and self.backend == other.backend
            and self.precision == other.precision
        )


@dataclass(frozen=True)
class Part:
    """A contiguous slice [offset, offset + count) of one job's samples."""

    job: Job
    offset: int
    count: int


@dataclass(eq=False)
class Dispatch:
    """A micro-batch the core decided to start now on one lane."""

    id: int
    lane: int
    workload: str
    backend: str
    precision: str
    parts: list[Part]
    #: Memory tokens held until `complete`.
    tokens: int
    #: Time the core handed it out (the start on the lane, as the core sees it).
    start: float
    #: Index of the lane group `lane` belongs to.
    group: int = 0
    #: Whether this is the one retry of a dispatch whose lane was lost.
    retried: bool = False
    #: Models the lane evicts and the load it does first (lane budgets only).
    swap: Swap | None = None

    @property
    def samples(self) -> int:
        return sum(p.count for p in self.parts)

    @property
    def jobs(self) -> list[Job]:
        return [p.job for p in self.parts]
