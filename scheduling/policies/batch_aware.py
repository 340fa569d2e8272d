"""Batch-aware: the job whose dispatch would carry the most samples goes first.

A batchable job's dispatch carries its whole queued compatible group (up to
the batch cap); a job of a non-batchable class carries only its own samples.
Bigger dispatches amortise each model call's fixed cost, so this policy buys
throughput, not latency. Ties go to the earlier arrival.
"""

from __future__ import annotations

from scheduling.job import Job
from scheduling.policies.base import QueueView, ScanPolicy


class BatchAwarePolicy(ScanPolicy):
    """(-samples the led dispatch would carry, arrival, id)."""

    name = "batch_aware"

    def rank(self, job: Job, now: float, view: QueueView) -> tuple[int, float, int]:
        """More samples first, then arrival, then id."""
        return (-view.batch_samples(job), job.arrival, job.id)
