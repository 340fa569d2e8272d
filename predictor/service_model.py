"""The learned predictor as a `ServiceTimeModel`: what the scheduler and the simulator ask.

`LatencyPredictor.predict(features) -> ms` answers rows of features; the
scheduling core asks `predict(workload, backend, precision, samples) -> seconds`
once per dispatch. This adapter fixes the lane setting (threads, busy lanes),
optionally answers a quantile instead of the mean, and memoises whole curves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from predictor.latency import LatencyPredictor

#: Smallest service time returned, seconds (as ProfileTable): the simulator's clock must advance.
MIN_SERVICE_S = 1e-5


class PredictorServiceTime:
    """A `ServiceTimeModel` view of a LatencyPredictor: seconds per dispatch.

    The simulator asks once per dispatch; a forest takes milliseconds per call,
    so the first question about a (workload, backend, precision) predicts the
    whole curve 1..`block` samples in one vectorised call and memoises it. The
    curve is made non-decreasing (the scheduler binary-searches it for the
    largest batch within a time budget) and floored at MIN_SERVICE_S.
    """

    def __init__(
        self,
        predictor: LatencyPredictor,
        *,
        threads: int = 1,
        busy_lanes: int = 0,
        quantile: float | None = None,
        block: int = 128,
    ) -> None:
        self.predictor = predictor
        self.threads, self.busy_lanes, self.quantile = threads, busy_lanes, quantile
        self.block = block
        self._curves: dict[tuple[str, str, str], np.ndarray] = {}

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Predicted service time in seconds of `samples` samples in one dispatch."""
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        key = (workload, backend, precision)
        curve = self._curves.get(key)
        if curve is None or samples > len(curve):
            curve = self._curves[key] = self._curve(key, max(self.block, 2 * samples))
        return float(curve[samples - 1])

    def _curve(self, key: tuple[str, str, str], n: int) -> np.ndarray:
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
        ms = p.predict(rows) if self.quantile is None else p.predict_quantile(rows, self.quantile)
        return np.maximum(np.maximum.accumulate(np.asarray(ms) / 1e3), MIN_SERVICE_S)

    def __repr__(self) -> str:
        return (
            f"PredictorServiceTime({self.predictor.model_type}, threads={self.threads}, "
            f"busy_lanes={self.busy_lanes}, quantile={self.quantile})"
        )
