"""How long a dispatch is expected to take: the one question policies ask.

The simulator answers it from measured profiles or a fixed table; the live
gateway from the learned predictor. The core only sees this Protocol.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol


class ServiceTimeModel(Protocol):
    """Predicts the service time (seconds) of running `samples` samples at once.

    `predict` is the mean: what shedding and the simulated lanes use. A model may
    also answer `plan(...)`, a planning estimate (a high quantile) that admission,
    dispatch budgets and micro-batch deadlines use so that a plan holds in most
    runs, not just the average one; `plan_of(model)` falls back to the mean.
    """

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Expected (mean) service time in seconds."""
        ...


#: (workload, backend, precision, samples) -> seconds.
Estimate = Callable[[str, str, str, int], float]


def plan_of(model: ServiceTimeModel) -> Estimate:
    """The model's planning estimate (`plan`) if it has one, else its mean."""
    plan = getattr(model, "plan", None)
    return plan if callable(plan) else model.predict


#: A workload's entry in FixedServiceTime: {samples: seconds} or (fixed_ms, per_sample_ms).
ServiceEntry = Mapping[int, float] | tuple[float, float]


class FixedServiceTime:
    """A ServiceTimeModel read from a fixed table, for the simulator and tests.

    Each workload maps either to a table {samples: seconds} with at least two
    points, linearly interpolated between points and extrapolated along the
    nearest segment outside them (never below 0), or to a pair
    (fixed_ms, per_sample_ms) meaning fixed + per_sample × samples
    milliseconds. Backend and precision are ignored; the key "*" is the
    fallback for workloads not listed.
    """

    def __init__(self, table: Mapping[str, ServiceEntry]) -> None:
        # Per workload: sorted sample counts and their times, as parallel tuples.
        self._curves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        for workload, entry in table.items():
            self._curves[workload] = _curve(workload, entry)

    @classmethod
    def linear(cls, fixed_ms: float, per_sample_ms: float, workloads: Iterable[str] = ("*",)):
        """The same fixed + per-sample cost (milliseconds) for every named workload."""
        return cls({w: (fixed_ms, per_sample_ms) for w in workloads})

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Service time in seconds of `samples` samples of `workload` in one dispatch."""
        curve = self._curves.get(workload) or self._curves.get("*")
        if curve is None:
            raise KeyError(f"no service time for workload {workload!r}")
        xs, ys = curve
        # Segment index: the last point at or below `samples`, kept inside the table
        # so that samples beyond either end extrapolate along the end segment.
        i = bisect_right(xs, samples) - 1
        i = min(max(i, 0), len(xs) - 2)
        x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
        return max(0.0, y0 + (y1 - y0) * (samples - x0) / (x1 - x0))


def _curve(workload: str, entry: ServiceEntry) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(entry, tuple):
        fixed_ms, per_sample_ms = entry
        if fixed_ms < 0 or per_sample_ms < 0:
            raise ValueError(f"{workload}: negative service time in {entry!r}")
        return (0.0, 1.0), (fixed_ms / 1e3, (fixed_ms + per_sample_ms) / 1e3)
    points = sorted(entry.items())
    if len(points) < 2:
        raise ValueError(f"{workload}: a service-time table needs two points, got {points!r}")
    if any(s < 0 or t < 0 for s, t in points):
        raise ValueError(f"{workload}: negative entry in {points!r}")
    return tuple(float(s) for s, _ in points), tuple(float(t) for _, t in points)


class CachedServiceTime:
    """Memoises another model's predictions per (workload, backend, precision, samples).

    Policies ask the same question many times per second; a learned model may
    take far longer to answer than the decision budget. Call `clear()` when the
    wrapped model changes (e.g. after an online correction).
    """

    def __init__(self, model: ServiceTimeModel, max_entries: int = 65_536) -> None:
        self.model = model
        self._max_entries = max_entries
        self._memo: dict[tuple[str, str, str, int], float] = {}
        self._plan_memo: dict[tuple[str, str, str, int], float] = {}
        self._plan = plan_of(model)

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The wrapped model's prediction, computed once per distinct question."""
        key = (workload, backend, precision, samples)
        value = self._memo.get(key)
        if value is None:
            if len(self._memo) >= self._max_entries:
                self._memo.clear()  # bounded memory; a full refill is cheap and rare
            value = self._memo[key] = self.model.predict(workload, backend, precision, samples)
        return value

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The wrapped model's planning estimate (its mean if it has none), memoised."""
        key = (workload, backend, precision, samples)
        value = self._plan_memo.get(key)
        if value is None:
            if len(self._plan_memo) >= self._max_entries:
                self._plan_memo.clear()
            value = self._plan_memo[key] = self._plan(workload, backend, precision, samples)
        return value

    def clear(self) -> None:
        """Forget every memoised prediction."""
        self._memo.clear()
        self._plan_memo.clear()
