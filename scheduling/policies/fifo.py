"""First in, first out: the job that arrived first leads the next dispatch."""

from __future__ import annotations

from scheduling.job import Job
from scheduling.policies.base import HeapPolicy


class FifoPolicy(HeapPolicy):
    """Arrival order, ties by id. A heap, so a decision is O(log n)."""

    name = "fifo"

    def key(self, job: Job) -> tuple[float, int]:
        """(arrival, id)."""
        return (job.arrival, job.id)
