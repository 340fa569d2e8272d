"""Domain errors the scheduling core raises at admission.

They carry the values that explain them, so that the server maps each to an
HTTP status in one place and the message needs no re-wording.
"""

from __future__ import annotations


class SchedulingError(Exception):
    """Base of every error the scheduling core raises on purpose."""


class QueueFull(SchedulingError):
    """The class's queue already holds `limit` jobs (admission control)."""

    def __init__(self, job_class: str, limit: int) -> None:
        self.job_class = job_class
        self.limit = limit
        super().__init__(f"queue for class {job_class!r} is full (limit {limit} queued jobs)")


class JobTooLarge(SchedulingError):
    """Even a one-sample dispatch of the job's model needs more tokens than exist."""

    def __init__(
        self,
        workload: str,
        precision: str,
        tokens: int,
        capacity: int,
        source: str = "table",
        limit: str = "node",
    ) -> None:
        self.workload = workload
        self.precision = precision
        self.tokens = tokens
        self.capacity = capacity
        #: Where the cost came from: "table" or "profile <file>".
        self.source = source
        #: What it exceeds: "node" (the token capacity) or "lane" (the lane budget).
        self.limit = limit
        origin = "hand-set table" if source == "table" else source
        if limit == "lane":
            what = f"model {workload!r} at {precision} holds {tokens} MiB loaded"
            bound = f"lane budget (tokens.lane_budget) of {capacity}"
        else:
            what = f"a one-sample dispatch of {workload!r} at {precision} needs {tokens} tokens"
            bound = f"capacity of {capacity}"
        super().__init__(
            f"{what} (MiB, cost from the {origin}), more than the {bound}: it could never run"
        )


class UnknownWorkload(SchedulingError, KeyError):
    """The job names a workload the scheduler has no token base for."""

    def __init__(self, workload: str, known: list[str]) -> None:
        self.workload = workload
        self.known = known
        super().__init__(workload)

    def __str__(self) -> str:
        # KeyError would print the bare repr of the key; say what is known instead.
        return f"unknown workload {self.workload!r}; known: {', '.join(self.known) or 'none'}"


class PredictedLate(SchedulingError):
    """Admission by predicted completion: the job would finish after its deadline.

    Times are seconds on the core's clock. `retry_after` is the predicted drain:
    how long until the work now ahead of the job (queued before it, and running on
    its lanes) is done.
    """

    def __init__(
        self, job_class: str, predicted_finish: float, deadline: float, arrival: float, drain: float
    ) -> None:
        self.job_class = job_class
        self.predicted_finish = predicted_finish
        self.deadline = deadline
        #: The job's latency budget (deadline - arrival), seconds.
        self.slo = deadline - arrival
        self.retry_after = drain
        super().__init__(
            f"a {job_class} job is predicted to finish {(predicted_finish - arrival) * 1e3:.0f} ms "
            f"after arrival, {(predicted_finish - deadline) * 1e3:.0f} ms past its "
            f"{self.slo * 1e3:.0f} ms deadline; the work ahead of it drains in about "
            f"{drain * 1e3:.0f} ms"
        )


class NoLane(SchedulingError):
    """The lane group that runs the job's class has no lane left (its nodes left)."""

    def __init__(self, job_class: str, group: str) -> None:
        self.job_class = job_class
        self.group = group
        super().__init__(
            f"no lane of group {group!r} (class {job_class!r}) is in the cluster: "
            "every node running one has left; retry once a node joins"
        )
