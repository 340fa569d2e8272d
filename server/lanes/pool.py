"""`LaneWorkers`: the gateway's lanes (thread or process workers) as one pool.

Not the scheduling core's `LanePool` (scheduling/resources.py), which only books
lanes: which lane runs which dispatch is the core's decision and its state; this
pool runs what the core decided, on the lane it named.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.lanes.base import Lane, LaneBatch, LaneResult


@dataclass
class LaneWorkers:
    """Every lane's worker, started in the background; `ready` once all have loaded."""

    lanes: Sequence[Lane]
    #: Why starting failed, if it did (shown by /readyz).
    error: str | None = None
    _started: bool = field(default=False, repr=False)

    @property
    def ready(self) -> bool:
        """Whether every lane has loaded and warmed its runners."""
        return self._started and all(lane.ready for lane in self.lanes)

    async def start(self) -> None:
        """Start every lane at once; records every failure in `error` (the gateway's
        start-up logs it, once)."""
        results = await asyncio.gather(
            *(lane.start() for lane in self.lanes), return_exceptions=True
        )
        failures = [
            f"lane {i}: {' '.join(str(r).split())}"  # one line, whatever the message
            for i, r in enumerate(results)
            if isinstance(r, Exception)
        ]
        if failures:
            self.error = "lanes failed to start: " + "; ".join(failures)
        self._started = True

    async def run(self, lane: int, batch: LaneBatch) -> LaneResult:
        """Run `batch` on lane `lane`."""
        return await self.lanes[lane].run(batch)

    async def abort(self, lane: int, reason: str) -> None:
        """Give up on lane `lane`'s dispatch in progress and replace its worker."""
        await self.lanes[lane].abort(reason)

    async def close(self) -> None:
        """Stop every worker (and release shared memory)."""
        await asyncio.gather(*(lane.close() for lane in self.lanes), return_exceptions=True)

    def describe(self, busy: Callable[[int], bool]) -> list[dict[str, Any]]:
        """Per lane, for GET /v1/lanes; `busy(lane)`: whether the scheduling core has
        the lane hold a dispatch (`Scheduler.lane_busy`)."""
        return [
            {
                "lane": lane.index,
                "group": lane.spec.group,
                "threads": lane.spec.threads,
                "priority": lane.spec.priority,
                "kind": lane.kind,
                "pid": lane.pid,
                "ready": lane.ready,
                "busy": busy(lane.index),
                "running": lane.running,
                "restarts": lane.restarts,
                "error": lane.error,
            }
            for lane in self.lanes
        ]
