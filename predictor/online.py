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
from dataclasses import dataclass
from typing import Protocol

from scheduling.service_time import ServiceTimeModel

Group = tuple[str, str, str]


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
    scheduler means "no estimate": no time-budget cap, nothing shed).
    """

    def __init__(self, prior: ServiceTimeModel | None = None, half_life: float = 200.0) -> None:
        #: Weight an observation keeps per later observation (half weight after half_life).
        self.keep = 0.5 ** (1.0 / half_life)
        self.prior = prior
        self._sums: dict[Group, _Sums] = {}
        self._lines: dict[Group, tuple[float, float]] = {}

    def observe(
        self, workload: str, backend: str, precision: str, samples: int, seconds: float
    ) -> None:
        """Record one dispatch of `samples` samples that ran for `seconds`."""
        key = (workload, backend, precision)
        sums = self._sums.setdefault(key, _Sums())
        sums.add(float(samples), seconds, self.keep)
        self._lines[key] = sums.line()

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        line = self._lines.get((workload, backend, precision))
        if line is None:
            return self.prior.predict(workload, backend, precision, samples) if self.prior else 0.0
        return line[0] + line[1] * samples

    def observed(self) -> int:
        """Groups with at least one observation."""
        return len(self._lines)


class LearnsOnline(Protocol):
    """A service-time model that updates itself from observed dispatches."""

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float: ...

    def observe(
        self, workload: str, backend: str, precision: str, samples: int, seconds: float
    ) -> None: ...


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
    """An exponentially weighted mean of ln(observed ÷ predicted), bias-corrected.

    Bias-corrected (sum of weights kept) so the first observation counts fully:
    a predictor off by 10× is corrected after one dispatch, not after a half-life.
    """

    weight: float = 0.0
    total: float = 0.0
    count: int = 0

    def add(self, log_ratio: float, keep: float) -> None:
        self.weight = self.weight * keep + 1.0
        self.total = self.total * keep + log_ratio
        self.count += 1

    @property
    def log_ratio(self) -> float:
        return self.total / self.weight if self.weight else 0.0

    @property
    def ratio(self) -> float:
        """Observed ÷ predicted, the factor applied to the base prediction."""
        return math.exp(self.log_ratio)


#: A residual's key: (workload, backend, precision, bucket).
BucketKey = tuple[str, str, str, int]


class ResidualCorrection:
    """A ServiceTimeModel: `answer`'s prediction × the residual of its bucket.

    Residuals are measured against `reference` (the mean prediction); the
    scheduler is answered from `answer` (e.g. a 0.95 quantile of the same
    predictor, default: `reference`), so a quantile keeps its safety margin
    after correction. A bucket never observed borrows the residual of the
    nearest observed bucket of its group (ties: the smaller batch), so a shift
    seen at batch 1 corrects batch 32 at once. If the base learns online too
    (`OnlineServiceTime`), it is fed the same observations.

    Predictions are made non-decreasing across bucket boundaries: the
    scheduler binary-searches them for the largest dispatch within a budget.
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
        self.answer = answer if answer is not None else reference
        self._residuals: dict[BucketKey, Residual] = {}
        self._buckets: dict[Group, list[int]] = {}  # observed buckets per group, sorted

    def observe(
        self, workload: str, backend: str, precision: str, samples: int, seconds: float
    ) -> float | None:
        """Learn from one dispatch; returns the relative error (corrected mean
        prediction − observed) ÷ observed it had before this update, or None
        when either side is not positive (nothing to learn from)."""
        group = (workload, backend, precision)
        base = self.reference.predict(*group, samples)
        error = None
        if base > 0 and seconds > 0:
            bucket = bucket_of(samples)
            error = (base * self._factor(group, bucket) - seconds) / seconds
            key = (*group, bucket)
            residual = self._residuals.get(key)
            if residual is None:
                residual = self._residuals[key] = Residual()
                self._buckets.setdefault(group, []).append(bucket)
                self._buckets[group].sort()
            residual.add(math.log(seconds / base), self.keep)
        if isinstance(self.reference, OnlineServiceTime):
            self.reference.observe(*group, samples, seconds)
        return error

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The corrected prediction in seconds."""
        group = (workload, backend, precision)
        bucket = bucket_of(samples)
        value = self.answer.predict(*group, samples) * self._factor(group, bucket)
        if bucket and group in self._buckets:
            # Never below the largest batch of the bucket beneath (monotone curve).
            value = max(value, self.predict(*group, (1 << bucket) - 1))
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
        residual = self._residuals.get((*group, bucket))
        if residual is None:
            observed = self._buckets.get(group)
            if not observed:
                return 1.0
            nearest = min(observed, key=lambda b: (abs(b - bucket), b))
            residual = self._residuals[(*group, nearest)]
        return residual.ratio
