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
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.lanes.base import Lane, LaneBatch, LaneError, LaneResult, RunnerKey, RunnerSpec

log = logging.getLogger("mlws.lanes")


@dataclass
class LaneWorkers:
    """Every lane's worker, started in the background; `ready` once all have loaded."""

    lanes: list[Lane]
    #: Why starting failed, if it did (shown by /readyz).
    error: str | None = None
    #: Lanes that left (their node died): kept for their index, never run again.
    retired: set[int] = field(default_factory=set)
    #: Every runner served, by key: what a lane loads on demand under a lane budget
    #: (without one, every lane holds all of them).
    catalogue: dict[RunnerKey, RunnerSpec] = field(default_factory=dict)
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

    async def load(
        self,
        runners: tuple[RunnerSpec, ...],
        previous: tuple[RunnerSpec, ...] = (),
        only: set[int] | None = None,
    ) -> None:
        """Load and warm `runners` on every live lane (or those in `only`) at once, then
        serve them; LaneError naming each lane that failed, after the others are put
        back: `previous` (the runners replaced) reloaded, or the new runners unloaded."""
        lanes = [lane for lane in self.live() if only is None or lane.index in only]
        results = await asyncio.gather(
            *(lane.load(runners) for lane in lanes), return_exceptions=True
        )
        failures = [(lane, r) for lane, r in zip(lanes, results, strict=True) if r is not None]
        if not failures:
            self.catalogue.update((r.key, r) for r in runners)
            return
        done = [lane for lane, r in zip(lanes, results, strict=True) if r is None]
        keys = tuple(r.key for r in runners)
        undo = [lane.load(previous) if previous else lane.unload(keys) for lane in done]
        await asyncio.gather(*undo, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: shutting down
        raise LaneError("; ".join(" ".join(str(r).split()) for _, r in failures))

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys` on every lane (a failure only logged: the
        runner is gone from the lane's spec either way)."""
        for key in keys:
            self.catalogue.pop(key, None)
        results = await asyncio.gather(
            *(lane.unload(keys) for lane in self.live()), return_exceptions=True
        )
        for lane, result in zip(self.live(), results, strict=True):
            if result is not None:
                log.warning("lane %d: unloading %s: %s", lane.index, keys, result)

    @property
    def runners(self) -> tuple[RunnerSpec, ...]:
        """Every runner served now (a lane added at run time loads these, or under a lane
        budget those that fit)."""
        return tuple(self.catalogue.values())

    async def swap(self, lane: int, evict: tuple[RunnerKey, ...], key: RunnerKey) -> None:
        """Lane `lane` releases `evict`, then loads and warms `key` (one of the
        catalogue's runners); LaneError if the load fails. On the lane's own worker,
        between dispatches: the scheduling core booked the swap on an idle lane."""
        worker = self.lanes[lane]
        if evict:
            await worker.unload(evict)
        await worker.load((self.catalogue[key],))

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
                "models": ["/".join(r.key) for r in lane.spec.runners],
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
