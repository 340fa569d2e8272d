"""Service times learned from the dispatches the gateway actually ran.

Per (workload, backend, precision) a least-squares line t = a + b·n over the
observed (samples, seconds) pairs, with exponential forgetting so the fit
follows drift (thermal throttling, a noisy neighbour, a changed thread count).
Pure: observations come in as arguments, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

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
