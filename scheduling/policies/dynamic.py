"""Dynamic: a weighted score of class, urgency, batchability, service time and tokens.

For a job leading a dispatch of n samples (its micro-batch, or its own next
part), with t = its predicted mean service time (0 without a model)
and hold = max_dispatch_ms (0 without a budget), the longest a lane can stay
busy, hence the longest a job passed over now may wait for the next one:

    slack    = deadline - now - t - hold                time left if it waits once more
    urgency  = clamp(1 - slack / slo, 0, 1)             0 fresh .. 1 at the last safe moment
    fill     = n / cap if the job is batchable else 0   how full its micro-batch is
    score    = w.interactive  * [interactive]
             + w.urgency      * urgency
             + w.batchability * fill
             - w.service_time * t / (t + service_scale)
             - w.token_cost   * tokens(n) / capacity

Triage (with a service model): a job that cannot end by its deadline even if
started now, its remaining dispatches spread over every lane, gets urgency 0
until `triage_slos` of its SLOs past the deadline, then ages back in: lanes go
first to jobs that can still be saved, and nothing waits for ever.

Highest score first, ties by arrival then id. Urgency is relative to the job's
own SLO, so an interactive job's urgency climbs ten times faster than a batch
job's; near its deadline an interactive job outranks everything. Config
requires w.urgency > w.interactive, so a batch job at its deadline outranks an
interactive job with time to spare: batch work is delayed by interactive load,
never starved. Counting the hold matters when t + hold is close to the
interactive SLO (ResNet-18 on one CPU thread: 43 ms + 50 ms of 100 ms): such a
job is urgent from arrival, and must not lose its only chance to a batch job
already past saving.
"""

from __future__ import annotations

from scheduling.job import Job
from scheduling.policies.base import PolicySettings, QueueView, ScanPolicy
from scheduling.service_time import ServiceTimeModel


class DynamicPolicy(ScanPolicy):
    """Weighted score (see module docstring); O(queue) per decision."""

    name = "dynamic"

    def __init__(self, config: PolicySettings, service_model: ServiceTimeModel | None) -> None:
        super().__init__(config, service_model)
        w = config.weights
        # Plain floats: the score runs once per queued job per decision.
        self._w_interactive = w.interactive
        self._w_urgency = w.urgency
        self._w_fill = w.batchability
        self._w_service = w.service_time
        self._w_tokens = w.token_cost
        self._scale = w.service_scale_ms / 1e3
        self._hold = (config.max_dispatch_ms or 0.0) / 1e3
        self._triage = w.triage_slos

    def score(self, job: Job, now: float, view: QueueView) -> float:
        """The job's score at `now`; higher dispatches first."""
        n = view.batch_samples(job)
        model = self.service_model
        t = model.predict(job.workload, job.backend, job.precision, n) if model else 0.0
        slo = job.deadline - job.arrival
        slack = job.deadline - now - t - self._hold
        urgency = 1.0 - slack / slo if slo > 0 else 1.0
        urgency = 0.0 if urgency < 0.0 else (1.0 if urgency > 1.0 else urgency)
        if (
            model is not None
            and self._triage > 0
            and now < job.deadline + self._triage * slo
            and self._lost(job, now, t, n, view)
        ):
            urgency = 0.0  # triage: lanes go first to jobs that can still be saved
        fill = n / view.dispatch_cap(job) if view.batchable(job) else 0.0
        score = self._w_urgency * urgency + self._w_fill * fill
        if job.job_class == "interactive":
            score += self._w_interactive
        if t > 0.0:
            score -= self._w_service * t / (t + self._scale)
        if self._w_tokens:
            # A dispatch holds tokens of one node: its share of a node's budget.
            score -= self._w_tokens * view.dispatch_tokens(job, n) / self.config.tokens.capacity
        return score

    def _lost(self, job: Job, now: float, t: float, n: int, view: QueueView) -> bool:
        """Whether even starting now the job cannot end by its deadline: its
        remaining dispatches of n samples (t each) spread over every lane of its group."""
        dispatches = -(-job.remaining // n) if n else 1
        rest = t * dispatches / max(1, view.group_lanes(job)) if dispatches > 1 else t
        return now + rest > job.deadline

    def rank(self, job: Job, now: float, view: QueueView) -> tuple[float, float, int]:
        """(-score, arrival, id)."""
        return (-self.score(job, now, view), job.arrival, job.id)
