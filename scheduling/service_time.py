"""How long a dispatch is expected to take: the one question policies ask.

The simulator answers it from measured profiles or a fixed table; the live
gateway from the learned predictor, corrected online. The core only sees this
Protocol.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Protocol


class ServiceTimeModel(Protocol):
    """Service time (seconds) of running `samples` samples of a model in one dispatch.

    Two answers for two kinds of question, so that no caller has to guess which
    one it gets:

    - `predict`, the **mean**: what a dispatch takes on average. For judging
      what is certainly lost or what happens typically: shedding (a job is
      dropped only if even its mean misses the deadline), the dynamic policy's
      score, the simulated lanes' run time, the live watchdog's cut-off.
    - `plan`, the **planning quantile** (e.g. 0.95; the mean again for a model
      that knows no spread): for promises that must hold in most runs, not just
      the average one: admission forecasts (each dispatch's excess plan - mean,
      at least 0), the dispatch budget `max_dispatch_ms`, and the micro-batch
      guard on its members' deadlines.

    `version` changes whenever an answer may have changed (a model that learns
    bumps it on every observation; a fixed one never does): memoised answers
    stay valid while it stays the same, so nobody has to flush them.
    """

    @property
    def version(self) -> int:
        """Changes whenever `predict` or `plan` may answer differently."""
        ...

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Mean service time in seconds."""
        ...

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Planning quantile of the service time in seconds."""
        ...


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

    #: A table never changes.
    version = 0

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

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The table's time: it knows no spread, so it plans with its mean."""
        return self.predict(workload, backend, precision, samples)


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
    """Memoises another model's answers per (workload, backend, precision, samples).

    Policies ask the same question many times per second; a learned model may
    take far longer to answer than the decision budget. The memo belongs to
    one version of the wrapped model: `sync()` (called by the scheduler as a
    decision begins, not per question, which keeps the hit path a dict lookup)
    forgets it once the model's version has moved.
    """

    def __init__(self, model: ServiceTimeModel, max_entries: int = 65_536) -> None:
        self.model = model
        self._max_entries = max_entries
        self._memo: dict[tuple[str, str, str, int], float] = {}
        self._plan_memo: dict[tuple[str, str, str, int], float] = {}
        #: The model version the memos hold answers of (None: not read yet).
        self.seen: int | None = None

    @property
    def version(self) -> int:
        """The wrapped model's version."""
        return self.model.version

    def sync(self) -> bool:
        """Forget every memoised answer if the model changed since; whether it had."""
        version = self.model.version
        if version == self.seen:
            return False
        self.seen = version
        self.clear()
        return True

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The wrapped model's mean, computed once per distinct question."""
        key = (workload, backend, precision, samples)
        value = self._memo.get(key)
        if value is None:
            if len(self._memo) >= self._max_entries:
                self._memo.clear()  # bounded memory; a full refill is cheap and rare
            value = self._memo[key] = self.model.predict(workload, backend, precision, samples)
        return value

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The wrapped model's planning quantile, computed once per distinct question."""
        key = (workload, backend, precision, samples)
        value = self._plan_memo.get(key)
        if value is None:
            if len(self._plan_memo) >= self._max_entries:
                self._plan_memo.clear()
            value = self._plan_memo[key] = self.model.plan(workload, backend, precision, samples)
        return value

    def clear(self) -> None:
        """Forget every memoised answer."""
        self._memo.clear()
        self._plan_memo.clear()
