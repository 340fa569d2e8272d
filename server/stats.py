"""The live ``/stats`` summary: per-class latency and SLO attainment over a sliding window.

Pure, like the scheduling core: `now` is always an argument (the gateway passes its
monotonic clock, tests a fake one), so a summary is reproducible from its inputs.

Entries live in deques per class in the order they were recorded; eviction pops from the
left, so it costs O(evicted) and memory is bounded by the window's traffic. Outcome and
SLO counts are running totals; a summary copies only the window's ok latencies into numpy
for the percentiles.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, get_args

import numpy as np

from scheduling.job import JOB_CLASSES, Job, Outcome

OUTCOME_NAMES: tuple[str, ...] = get_args(Outcome)
#: Percentiles reported for the end-to-end latency of ok jobs.
_E2E_PERCENTILES = (50.0, 95.0, 99.0)


class _ClassWindow:
    """One class's window: finished jobs with running counts, and ok jobs' latencies."""

    def __init__(self) -> None:
        #: (recorded at, outcome, slo met), oldest first.
        self.finished: deque[tuple[float, str, bool]] = deque()
        # Ok jobs, oldest first, as three parallel deques of floats: np.fromiter reads a
        # deque of floats ~10x faster than np.array reads a deque of tuples.
        #: When each ok job was recorded.
        self.ok: deque[float] = deque()
        #: Its arrival-to-end and arrival-to-start times, ms (NaN when unknown).
        self.e2e_ms: deque[float] = deque()
        self.queue_ms: deque[float] = deque()
        # Running totals, so that counts cost nothing at summary time.
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOME_NAMES, 0)
        self.met = 0

    def add(self, job: Job, now: float) -> None:
        outcome = str(job.outcome)
        met = job.slo_met
        self.finished.append((now, outcome, met))
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.met += met
        if outcome == "ok":
            e2e = (job.end - job.arrival) * 1e3 if job.end is not None else math.nan
            queue = (job.start - job.arrival) * 1e3 if job.start is not None else math.nan
            self.ok.append(now)
            self.e2e_ms.append(e2e)
            self.queue_ms.append(queue)

    def evict(self, cutoff: float) -> None:
        # Recorded in time order by one event loop, so the oldest entries are on the left.
        finished, ok = self.finished, self.ok
        while finished and finished[0][0] <= cutoff:
            _, outcome, met = finished.popleft()
            self.outcomes[outcome] -= 1
            self.met -= met
        while ok and ok[0] <= cutoff:
            ok.popleft()
            self.e2e_ms.popleft()
            self.queue_ms.popleft()

    def summary(self, window_s: float) -> dict[str, Any]:
        count = len(self.finished)
        n = len(self.ok)
        e2e = np.fromiter(self.e2e_ms, dtype=np.float64, count=n)
        queue = np.fromiter(self.queue_ms, dtype=np.float64, count=n)
        p50, p95, p99 = _percentiles(e2e, _E2E_PERCENTILES)
        (queue_p99,) = _percentiles(queue, (99.0,))
        return {
            "count": count,
            "ok": self.outcomes["ok"],
            "rate_per_s": count / window_s,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "queue_p99_ms": queue_p99,
            "slo_attainment": self.met / count if count else None,
            "outcomes": dict(self.outcomes),
        }


class SlidingWindowStats:
    """Per-class summary of the jobs that finished in the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        """Keep jobs recorded in (now - window_s, now]."""
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self._classes: dict[str, _ClassWindow] = {c: _ClassWindow() for c in JOB_CLASSES}

    def record(self, job: Job, now: float) -> None:
        """Add one finished job (any outcome) at time `now`.

        Raises ValueError for an unfinished job or an unknown class: both are bugs in
        the caller, and silently skipping them would skew attainment.
        """
        if job.outcome is None:
            raise ValueError(f"job {job.id} has not finished (outcome is None)")
        window = self._classes.get(job.job_class)
        if window is None:
            raise ValueError(f"unknown class {job.job_class!r}; expected one of {JOB_CLASSES}")
        window.add(job, now)
        window.evict(now - self.window_s)

    def summary(self, now: float) -> dict[str, Any]:
        """The JSON-ready summary at `now`: per class, counts, rate, latency, attainment.

        Per class: ``count`` (finished jobs in the window), ``ok``, ``rate_per_s``
        (count ÷ window_s), ``p50_ms``/``p95_ms``/``p99_ms`` (e2e of ok jobs),
        ``queue_p99_ms`` (arrival to start, ok jobs), ``slo_attainment`` (ok within the
        deadline ÷ all finished), and ``outcomes`` (count per outcome, all keys present).
        Latency and attainment values are None when there is nothing to measure.
        """
        classes: dict[str, dict[str, Any]] = {}
        for job_class, window in self._classes.items():
            window.evict(now - self.window_s)
            classes[job_class] = window.summary(self.window_s)
        return {"window_s": self.window_s, "classes": classes}


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> tuple[float | None, ...]:
    """Linear-interpolation percentiles (numpy's default) of the known values, or Nones."""
    known = values[~np.isnan(values)]
    if known.size == 0:
        return (None,) * len(qs)
    return tuple(float(v) for v in np.percentile(known, qs))
