"""The learned predictor as a `ServiceTimeModel`: what the scheduler and the simulator ask.

`LatencyPredictor.predict(features) -> ms` answers rows of features; the
scheduling core asks `predict(workload, backend, precision, samples) -> seconds`
once per dispatch. This adapter fixes the lane setting (threads, busy lanes),
answers the mean (`predict`) and a trained quantile as its planning estimate
(`plan`), and memoises whole curves.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

#: Smallest service time returned, seconds (as ProfileTable): the simulator's clock must advance.
MIN_SERVICE_S = 1e-5


class LatencyModel(Protocol):
    """What the adapter asks of a trained `predictor.latency.LatencyPredictor` (named
    here, not imported: the predictor builds its adapter, so it imports this module)."""

    model_type: str

    def predict(self, features: Any) -> float | np.ndarray:
        """Mean service time, ms, per row of features."""
        ...

    def predict_quantile(self, features: Any, q: float = 0.95) -> float | np.ndarray:
        """The q-quantile of the service time, ms, per row of features."""
        ...


class PredictorServiceTime:
    """A `ServiceTimeModel` view of a LatencyPredictor: seconds per dispatch.

    `predict` is the predictor's mean; `plan` its `quantile` (None: the mean
    again). The simulator asks once per dispatch; a forest takes milliseconds
    per call, so the first question about a (workload, backend, precision)
    predicts the whole curve 1..`block` samples in one vectorised call and
    memoises it. Each curve is made non-decreasing (the scheduler binary-searches
    it for the largest batch within a time budget) and floored at MIN_SERVICE_S.
    """

    #: A trained predictor never changes.
    version = 0

    def __init__(
        self,
        predictor: LatencyModel,
        *,
        threads: int = 1,
        busy_lanes: int = 0,
        quantile: float | None = None,
        block: int = 128,
    ) -> None:
        self.predictor = predictor
        self.threads, self.busy_lanes, self.quantile = threads, busy_lanes, quantile
        self.block = block
        #: Memoised curves of the mean and of the quantile.
        self._curves: dict[tuple[str, str, str], np.ndarray] = {}
        self._plan_curves: dict[tuple[str, str, str], np.ndarray] = {}

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Mean service time in seconds of `samples` samples in one dispatch."""
        return self._at(self._curves, None, (workload, backend, precision), samples)

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The `quantile` of the service time in seconds (the mean without one)."""
        if self.quantile is None:
            return self.predict(workload, backend, precision, samples)
        return self._at(self._plan_curves, self.quantile, (workload, backend, precision), samples)

    def _at(
        self,
        curves: dict[tuple[str, str, str], np.ndarray],
        quantile: float | None,
        key: tuple[str, str, str],
        samples: int,
    ) -> float:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        curve = curves.get(key)
        if curve is None or samples > len(curve):
            curve = curves[key] = self._curve(key, max(self.block, 2 * samples), quantile)
        return float(curve[samples - 1])

    def _curve(self, key: tuple[str, str, str], n: int, quantile: float | None) -> np.ndarray:
        batch = np.arange(1, n + 1)
        rows = {
            "workload": [key[0]] * n,
            "backend": [key[1]] * n,
            "precision": [key[2]] * n,
            "batch_size": batch,
            "threads": np.full(n, self.threads),
            "busy_lanes": np.full(n, self.busy_lanes),
        }
        p = self.predictor
        ms = p.predict(rows) if quantile is None else p.predict_quantile(rows, quantile)
        return np.maximum(np.maximum.accumulate(np.asarray(ms) / 1e3), MIN_SERVICE_S)

    def __repr__(self) -> str:
        return (
            f"PredictorServiceTime({self.predictor.model_type}, threads={self.threads}, "
            f"busy_lanes={self.busy_lanes}, quantile={self.quantile})"
        )
