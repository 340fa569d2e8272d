"""Interactive first; earliest deadline first within a class.

Invariant (with the scheduler's strict head-of-line rule): a batch job never
starts while a ready interactive job waits, because every ready interactive
job sorts before every batch job and nothing overtakes the head.
"""

from __future__ import annotations

from scheduling.job import Job
from scheduling.policies.base import HeapPolicy

#: Lower dispatches first.
CLASS_RANK = {"interactive": 0, "batch": 1}


class PrioritySloPolicy(HeapPolicy):
    """(class, deadline, arrival, id) in one heap: deadlines are fixed at arrival."""

    name = "priority_slo"

    def key(self, job: Job) -> tuple[int, float, float, int]:
        """(class rank, deadline, arrival, id)."""
        return (CLASS_RANK[job.job_class], job.deadline, job.arrival, job.id)
