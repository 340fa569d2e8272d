"""Admission by predicted completion: when would a job finish if admitted now?

Pure arithmetic over what the scheduler knows at submit: when each lane of the
job's group becomes free (now, or the predicted end of the dispatch it runs),
the dispatches of the jobs the policy would run before it, and the job's own
dispatches. Each dispatch goes to the lane free first (list scheduling, the
order the core hands out lanes), so a split job's parts fan out over idle lanes
exactly as they would run.

The answer is a plan, not a promise: it uses the planning estimate of each
service time (a high quantile where the model has one), and ignores jobs that
will arrive later and outrank this one (an interactive job admitted now may
still be overtaken by a tighter deadline). Shedding catches what the plan missed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from heapq import heapify, heapreplace

from scheduling.errors import PredictedLate
from scheduling.job import Job


@dataclass(frozen=True)
class Forecast:
    """When an admitted job is predicted to start and finish (seconds, core clock)."""

    #: Start of the job's first dispatch.
    start: float
    #: End of its last dispatch.
    finish: float


def chunk_times(samples: int, cap: int, estimate: Callable[[int], float]) -> list[float]:
    """Service times of the dispatches `samples` samples split into at most `cap` each."""
    full, rest = divmod(samples, cap)
    times = [estimate(cap)] * full
    if rest:
        times.append(estimate(rest))
    return times


def forecast(
    lane_free: Sequence[float],
    ahead: Iterable[float],
    own: Sequence[float],
    not_before: float,
) -> Forecast:
    """List-schedule `ahead` then `own` dispatch times on lanes free at `lane_free`.

    `not_before` holds the job's own dispatches back (e.g. until its batching
    window ends); the work ahead is not held.
    """
    lanes = list(lane_free)
    heapify(lanes)
    for t in ahead:
        heapreplace(lanes, lanes[0] + t)
    start = finish = None
    for t in own:
        begin = max(lanes[0], not_before)
        heapreplace(lanes, begin + t)
        start = begin if start is None else start
        finish = begin + t if finish is None else max(finish, begin + t)
    assert start is not None and finish is not None, "a job has at least one dispatch"
    return Forecast(start, finish)


def check_admission(job: Job, now: float, margin: float, plan: Forecast, alone: float) -> None:
    """Record the forecast on the job; raise PredictedLate if it would miss its deadline.

    `alone` is the job's own mean service time. A job that would start at once is
    refused only if even that misses: refusing it on the planning margin would
    leave its lanes idle, idle lanes teach the service model nothing, and a plan
    inflated by a burst of slow runs would then refuse every job for ever.
    """
    job.predicted_end = plan.finish
    if plan.finish + margin <= job.deadline:
        return
    if plan.start <= now and now + alone <= job.deadline:
        return
    raise PredictedLate(job.job_class, plan.finish, job.deadline, job.arrival, plan.start - now)
