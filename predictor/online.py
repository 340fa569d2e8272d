"""Service times learned from the dispatches the gateway actually ran.

Two learners, both fed every observed dispatch (samples, seconds):

- `OnlineServiceTime`: per (workload, backend, precision) a least-squares line
  t = a + b·n with exponential forgetting; what the gateway plans with when no
  trained predictor is configured.
- `ResidualCorrection`: wraps any base model (the learned predictor, or the
  line above) and multiplies its prediction by an exponentially weighted
  residual observed ÷ predicted, kept per (workload, backend, precision,
  batch-size bucket). A predictor trained on another machine, at another
  thread count or before a noisy neighbour moved in is pulled toward what the
  lanes actually do, bucket by bucket, without retraining.

Both forget, so they follow drift (thermal throttling, a noisy neighbour).
Pure: observations come in as arguments, nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from scheduling.service_time import ServiceTimeModel

Group = tuple[str, str, str]
#: The planning estimate's quantile, and how many recent runs per bucket it is read from.
PLAN_QUANTILE = 0.95
PLAN_WINDOW = 200
#: Runs of a bucket before its deviations count toward the planning quantile.
SETTLED_RUNS = 10


@dataclass
class _Sums:
    """Exponentially weighted sums of a weighted least-squares fit."""

    w: float = 0.0
    n: float = 0.0
    t: float = 0.0
    nn: float = 0.0
    nt: float = 0.0

    def add(self, n: float, t: float, keep: float) -> None:
        self.w = self.w * keep + 1.0
        self.n = self.n * keep + n
        self.t = self.t * keep + t
        self.nn = self.nn * keep + n * n
        self.nt = self.nt * keep + n * t

    def line(self) -> tuple[float, float]:
        """(intercept, slope) in seconds; through the origin when n never varied."""
        var = self.w * self.nn - self.n * self.n
        if var <= 1e-9 * max(1.0, self.w * self.nn):
            return 0.0, self.t / self.n  # one batch size seen: time per sample
        slope = (self.w * self.nt - self.n * self.t) / var
        slope = max(slope, 0.0)  # more samples never take less time
        intercept = max((self.t - slope * self.n) / self.w, 0.0)
        return intercept, slope


class OnlineServiceTime:
    """A ServiceTimeModel fitted from observed dispatches.

    Before a group has been observed, `prior` answers (None: 0.0, which to the
    scheduler means "no estimate": no time-budget cap, nothing shed). A line
    knows no spread: it plans with its mean (`ResidualCorrection` adds one).
    """

    def __init__(self, prior: ServiceTimeModel | None = None, half_life: float = 200.0) -> None:
        #: Weight an observation keeps per later observation (half weight after half_life).
        self.keep = 0.5 ** (1.0 / half_life)
        self.prior = prior
        self._sums: dict[Group, _Sums] = {}
        self._lines: dict[Group, tuple[float, float]] = {}
        #: Observations so far: every one may move a line.
        self.version = 0

    def observe(
        self, workload: str, backend: str, precision: str, samples: int, seconds: float
    ) -> None:
        """Record one dispatch of `samples` samples that ran for `seconds`."""
        key = (workload, backend, precision)
        sums = self._sums.setdefault(key, _Sums())
        sums.add(float(samples), seconds, self.keep)
        self._lines[key] = sums.line()
        self.version += 1

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The fitted line at `samples`, in seconds (the prior's mean before any run)."""
        line = self._lines.get((workload, backend, precision))
        if line is None:
            return self.prior.predict(workload, backend, precision, samples) if self.prior else 0.0
        return line[0] + line[1] * samples

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The mean again: a line has no spread."""
        return self.predict(workload, backend, precision, samples)

    def observed(self) -> int:
        """Groups with at least one observation."""
        return len(self._lines)


def linear_quantile(values: Iterable[float], q: float) -> float:
    """numpy's default (linear) quantile of a few hundred floats, in plain Python: it
    runs after every dispatch, on the event loop, where numpy's call overhead is the
    larger part of the cost at this size."""
    ranked = sorted(values)
    pos = q * (len(ranked) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ranked) - 1)
    return ranked[lo] + (ranked[hi] - ranked[lo]) * (pos - lo)


def bucket_of(samples: int) -> int:
    """Batch-size bucket: 0 for 1 sample, 1 for 2-3, 2 for 4-7, ... (powers of two).

    Service time per sample changes with the batch (fixed costs amortised,
    caches overflowing), so one residual per bucket; power-of-two buckets are
    narrow where the curve bends most.
    """
    return max(samples, 1).bit_length() - 1


def bucket_label(bucket: int) -> str:
    """The bucket's batch sizes as text: "1", "2-3", "4-7", ..."""
    lo = 1 << bucket
    return "1" if bucket == 0 else f"{lo}-{2 * lo - 1}"


@dataclass
class Residual:
    """An exponentially weighted mean of ln(observed ÷ predicted), bias-corrected, and the
    recent runs' deviations from it.

    Bias-corrected (sum of weights kept) so the first observation counts fully:
    a predictor off by 10× is corrected after one dispatch, not after a half-life.
    The deviations (each run's log ratio minus the mean as it stood) give the
    planning quantile empirically: service times on shared cores are skewed
    (a cold cache, a preempted thread), and a normal spread fitted to them puts
    the 0.95 quantile far out, where a window of real runs does not.
    """

    weight: float = 0.0
    total: float = 0.0
    count: int = 0
    deviations: deque[float] = field(default_factory=lambda: deque(maxlen=PLAN_WINDOW))
    #: excess(q) per q since the last add: admission asks for it many times per
    #: request, and a quantile of the window costs tens of microseconds each time.
    _excess: dict[float, float] = field(default_factory=dict, repr=False)

    def add(self, log_ratio: float, keep: float) -> None:
        # A young mean is still converging: deviations from it measure its error,
        # not how runs vary, and would inflate the quantile for a whole window.
        if self.count >= SETTLED_RUNS:
            self.deviations.append(log_ratio - self.log_ratio)
        self.weight = self.weight * keep + 1.0
        self.total = self.total * keep + log_ratio
        self.count += 1
        self._excess.clear()

    @property
    def log_ratio(self) -> float:
        return self.total / self.weight if self.weight else 0.0

    def excess(self, q: float = PLAN_QUANTILE) -> float:
        """The q-quantile of recent runs' log deviation from the mean (0 if none above it)."""
        if not self.deviations:
            return 0.0
        cached = self._excess.get(q)
        if cached is None:
            cached = self._excess[q] = max(0.0, linear_quantile(self.deviations, q))
        return cached

    @property
    def ratio(self) -> float:
        """Observed ÷ predicted, the factor applied to the base prediction."""
        return math.exp(self.log_ratio)


#: A residual's key: (workload, backend, precision, bucket).
BucketKey = tuple[str, str, str, int]


class ResidualCorrection:
    """A ServiceTimeModel: the base prediction × the residual of its bucket.

    The one owner of a lane group's service times: every timed run is observed
    here once, and `version` counts them, so whoever memoises answers knows when
    to forget them. `predict` is the corrected mean: `reference` (the base's mean)
    × the bucket's residual, measured against that same mean. `plan` is the
    planning quantile admission and dispatch budgets use: `answer.plan` (e.g. a
    trained 0.95 quantile) × the residual, so a quantile keeps its safety margin
    after correction; or, with no trained quantile, the corrected mean × exp(the
    0.95 quantile of the recent runs' deviation from it): an online 0.95 quantile
    of how runs vary on these lanes.

    A bucket never observed borrows the residual of the nearest observed bucket
    of its group (ties: the smaller batch), so a shift seen at batch 1 corrects
    batch 32 at once. If the base learns online too (`OnlineServiceTime`), it is
    fed the same observations. Predictions are made non-decreasing across bucket
    boundaries: the scheduler binary-searches them for the largest dispatch
    within a budget.
    """

    def __init__(
        self,
        reference: ServiceTimeModel,
        answer: ServiceTimeModel | None = None,
        half_life: float = 20.0,
    ) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        #: Weight an observation keeps per later observation of its bucket.
        self.keep = 0.5 ** (1.0 / half_life)
        self.reference = reference
        #: A model whose `plan` is a trained quantile (None: plan from the observed runs).
        self.answer = answer
        self._residuals: dict[BucketKey, Residual] = {}
        self._buckets: dict[Group, list[int]] = {}  # observed buckets per group, sorted
        #: Observations so far; bumped by each (the base learns through `observe` only).
        self.version = 0

    def observe(
        self, workload: str, backend: str, precision: str, samples: int, seconds: float
    ) -> float | None:
        """Learn from one dispatch; returns the relative error (corrected mean
        prediction − observed) ÷ observed it had before this update, or None
        when either side is not positive (nothing to learn from).

        A base that learns online is updated first and the residual measured
        against its updated fit: measured against a fit still learning its first
        points (a line through one batch size extrapolated to 32), the residual
        would keep that cold-start error, and the planning quantile with it."""
        group = (workload, backend, precision)
        bucket = bucket_of(samples)
        before = self.reference.predict(*group, samples)
        error = None
        if before > 0 and seconds > 0:
            error = (before * self._factor(group, bucket) - seconds) / seconds
        if isinstance(self.reference, OnlineServiceTime):
            self.reference.observe(*group, samples, seconds)
        base = self.reference.predict(*group, samples)
        if base > 0 and seconds > 0:
            key = (*group, bucket)
            residual = self._residuals.get(key)
            if residual is None:
                residual = self._residuals[key] = Residual()
                self._buckets.setdefault(group, []).append(bucket)
                self._buckets[group].sort()
            residual.add(math.log(seconds / base), self.keep)
        self.version += 1
        return error

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The corrected mean in seconds."""
        return self._corrected((workload, backend, precision), samples, plan=False)

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The corrected planning quantile in seconds (see the class docstring)."""
        return self._corrected((workload, backend, precision), samples, plan=True)

    def _corrected(self, group: Group, samples: int, *, plan: bool) -> float:
        bucket = bucket_of(samples)
        residual = self._residual(group, bucket)
        factor = residual.ratio if residual is not None else 1.0
        if plan and self.answer is not None:
            value = self.answer.plan(*group, samples) * factor
        else:
            value = self.reference.predict(*group, samples) * factor
            if plan and residual is not None:
                value *= math.exp(residual.excess())
        if bucket and group in self._buckets:
            # Never below the largest batch of the bucket beneath (monotone curve).
            value = max(value, self._corrected(group, (1 << bucket) - 1, plan=plan))
        return value

    def residual(
        self, workload: str, backend: str, precision: str, samples: int
    ) -> Residual | None:
        """The residual of the bucket `samples` falls in, if that bucket was observed."""
        return self._residuals.get((workload, backend, precision, bucket_of(samples)))

    def residuals(self) -> dict[BucketKey, Residual]:
        """Every observed bucket's residual (a copy of the mapping)."""
        return dict(self._residuals)

    def _factor(self, group: Group, bucket: int) -> float:
        residual = self._residual(group, bucket)
        return residual.ratio if residual is not None else 1.0

    def _residual(self, group: Group, bucket: int) -> Residual | None:
        """The bucket's residual, or the nearest observed bucket's; None if none."""
        residual = self._residuals.get((*group, bucket))
        if residual is None:
            observed = self._buckets.get(group)
            if not observed:
                return None
            nearest = min(observed, key=lambda b: (abs(b - bucket), b))
            residual = self._residuals[(*group, nearest)]
        return residual
