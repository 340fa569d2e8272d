"""The per-dispatch watchdog: a model call that never returns must not hold a lane.

A dispatch gets max(min_s, factor × its predicted service time). Past that, the
lane's worker is replaced (a process is killed and restarted; a thread lane gets
a fresh thread and runners, ONNX Runtime's run told to stop) and the dispatch
fails with LaneHung, so each of its requests gets one 503 naming the cut-off.
The limit is deliberately generous: it is there for hangs, not for slow runs,
which the scheduler's own forecasts handle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from server.lanes.base import LaneBatch, LaneError, LaneResult
from server.lanes.pool import LaneWorkers


class LaneHung(LaneError):
    """A dispatch outlived the watchdog's limit; its lane has been replaced."""


@dataclass(frozen=True)
class Watchdog:
    """How long a dispatch may run: max(min_s, factor × predicted); min_s None: forever."""

    min_s: float | None = 30.0
    factor: float = 20.0

    def limit_s(self, predicted_s: float) -> float | None:
        """The cut-off for a dispatch predicted to take `predicted_s` seconds."""
        if self.min_s is None:
            return None
        return max(self.min_s, self.factor * predicted_s)


async def run_watched(
    pool: LaneWorkers, lane: int, batch: LaneBatch, limit_s: float | None
) -> LaneResult:
    """Run `batch` on `lane`; past `limit_s`, replace the lane and raise LaneHung."""
    if limit_s is None:
        return await pool.run(lane, batch)
    try:
        async with asyncio.timeout(limit_s):
            return await pool.run(lane, batch)
    except TimeoutError:
        reason = f"dispatch {batch.dispatch_id} still running after {limit_s:.1f} s (watchdog)"
        await pool.abort(lane, reason)
        raise LaneHung(f"lane {lane}: {reason}; the lane was replaced") from None
