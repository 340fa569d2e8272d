"""Admission by predicted completion: when would a job finish if admitted now?

Pure arithmetic over what the scheduler knows at submit: when each lane of the
job's group becomes free (now, or the predicted end of the dispatch it runs),
the dispatches of the jobs the policy would run before it, and the job's own
dispatches. Each dispatch goes to the lane free first (list scheduling, the
order the core hands out lanes), so a split job's parts fan out over idle lanes
exactly as they would run.

Each dispatch is an `Estimate`: its mean and its planning excess (the planning
quantile minus the mean). Dispatches that run one after the other on a lane add
up as independent times do: means add, and the excess of the chain is the root
of the summed squares of the excesses (the normal approximation: the 0.95
quantile of a sum is its mean plus z × its standard deviation, and each excess
is z × a standard deviation). Adding the quantiles instead would count a slow run
of every dispatch in the chain at once: two jobs ahead of a third would leave
room for barely one.

The answer is a plan, not a promise: it ignores jobs that will arrive later and
outrank this one (an interactive job admitted now may still be overtaken by a
tighter deadline). Shedding catches what the plan missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from heapq import heapify, heapreplace
from typing import TypeVar

from scheduling.errors import PredictedLate
from scheduling.job import Job

#: (mean seconds, planning excess in seconds) of one dispatch, or of a lane's chain.
Estimate = tuple[float, float]
T = TypeVar("T")


@dataclass(frozen=True)
class Forecast:
    """When an admitted job is predicted to start and finish (seconds, core clock)."""

    #: Start of the job's first dispatch (mean).
    start: float
    #: End of its last dispatch, at the planning quantile.
    finish: float


def chunk_times(samples: int, cap: int, estimate: Callable[[int], T]) -> list[T]:
    """`estimate(n)` of each dispatch when `samples` samples are split into at most
    `cap` each (asked once per distinct size): a time, or an `Estimate`."""
    full, rest = divmod(samples, cap)
    times = [estimate(cap)] * full if full else []
    if rest:
        times.append(estimate(rest))
    return times


def forecast(
    lane_free: Sequence[Estimate],
    ahead: Iterable[Estimate],
    own: Sequence[Estimate],
    not_before: float,
) -> Forecast:
    """List-schedule `ahead` then `own` dispatches on lanes free at `lane_free`.

    A lane is (mean time it frees, excess² of what runs on it until then); each
    dispatch goes to the lane that frees first on average. `not_before` holds the
    job's own dispatches back (e.g. until its batching window ends).
    """
    lanes = [(free, excess * excess) for free, excess in lane_free]
    heapify(lanes)
    for mean, excess in ahead:
        free, var = lanes[0]
        heapreplace(lanes, (free + mean, var + excess * excess))
    start = finish = None
    for mean, excess in own:
        free, var = lanes[0]
        begin = max(free, not_before)
        var += excess * excess
        heapreplace(lanes, (begin + mean, var))
        end = begin + mean + math.sqrt(var)
        start = begin if start is None else start
        finish = end if finish is None else max(finish, end)
    assert start is not None and finish is not None, "a job has at least one dispatch"
    return Forecast(start, finish)


def check_admission(
    job: Job,
    now: float,
    margin: float,
    plan: Forecast,
    alone: float,
    idle: bool,
    probe: bool = False,
) -> None:
    """Record the forecast on the job; raise PredictedLate if it would miss its deadline.

    `alone` is the job's own mean service time; `idle` says that no lane of its
    group runs anything and nothing is queued for them. Then the job is refused
    only if even its mean time misses: refusing it on the planning margin would
    leave every lane idle, idle lanes teach the service model nothing, and a plan
    inflated by a burst of slow runs would refuse every job for ever. With any
    lane busy, the plan decides: a slot that frees under overload goes to the
    next arrival that fits the plan, not to one that merely fits on average.
    `probe` (idle lanes that have run nothing for a while) admits the job anyway.
    """
    job.predicted_end = plan.finish
    if plan.finish + margin <= job.deadline:
        return
    if idle and now + alone <= job.deadline:
        return
    if probe:
        job.probe = True  # never shed: its run is how the model relearns
        return
    # The finish the decision used: the answer also waits `margin` on the event loop.
    finish = plan.finish + margin
    raise PredictedLate(job.job_class, finish, job.deadline, job.arrival, plan.start - now)
