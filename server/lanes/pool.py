"""`LaneWorkers`: the gateway's lanes (thread, process or Ray workers) as one pool.

Not the scheduling core's `LanePool` (scheduling/resources.py), which only books
lanes: which lane runs which dispatch is the core's decision and its state; this
pool runs what the core decided, on the lane it named. Lanes are indexed as the
core numbers them: a lane added at run time (a node joined) is appended under the
index the core gave it, and a lane that left (its node died) stays under its
index, retired: it no longer counts for readiness or shows in /v1/lanes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.lanes.base import Lane, LaneBatch, LaneResult


@dataclass
class LaneWorkers:
    """Every lane's worker, started in the background; `ready` once all have loaded."""

    lanes: list[Lane]
    #: Why starting failed, if it did (shown by /readyz).
    error: str | None = None
    #: Lanes that left (their node died): kept for their index, never run again.
    retired: set[int] = field(default_factory=set)
    _started: bool = field(default=False, repr=False)

    @property
    def ready(self) -> bool:
        """Whether every lane still in the pool has loaded and warmed its runners."""
        return self._started and all(lane.ready for lane in self.live())

    def live(self) -> list[Lane]:
        """The lanes not retired, in index order."""
        return [lane for lane in self.lanes if lane.index not in self.retired]

    def add(self, lane: Lane) -> None:
        """Append a started lane under the index the scheduling core gave it."""
        if lane.index != len(self.lanes):
            raise ValueError(f"lane {lane.index} added as lane {len(self.lanes)}")
        self.lanes.append(lane)

    def retire(self, index: int) -> bool:
        """Lane `index` left; False if it had already."""
        if index in self.retired:
            return False
        self.retired.add(index)
        return True

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

    def describe(
        self, busy: Callable[[int], bool], node_of: Callable[[int], str]
    ) -> list[dict[str, Any]]:
        """Per lane still in the pool, for GET /v1/lanes; `busy(lane)`: whether the
        scheduling core has the lane hold a dispatch (`Scheduler.lane_busy`), and
        `node_of(lane)` the node the core places it on."""
        return [
            {
                "lane": lane.index,
                "group": lane.spec.group,
                "node": node_of(lane.index),
                "state": _state(lane),
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
            for lane in self.live()
        ]


def _state(lane: Lane) -> str:
    """ready; starting (loading); restarting (a new worker after a crash); failed."""
    if lane.ready:
        return "ready"
    if lane.error:
        return "failed"
    return "restarting" if lane.restarts else "starting"
