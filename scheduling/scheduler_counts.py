"""The scheduler's counters as read-only views (queue depth, lanes, tokens, dispatches).

A mixin so that `scheduling/scheduler.py` keeps to its decisions: it owns the
state these read, and the gateway's metrics and the simulator only read it here.
"""

from __future__ import annotations

from scheduling.job import Dispatch
from scheduling.resources import LanePool, TokenPool


class SchedulerCounts:
    """Counters of a Scheduler; the scheduler sets the attributes they read."""

    _queued: dict[str, int]
    _pending: int
    _running: dict[int, Dispatch]
    _tokens: TokenPool
    _lanes: LanePool

    def queue_depth(self, job_class: str) -> int:
        """Queued jobs of a class (jobs with samples not yet dispatched)."""
        return self._queued[job_class]

    @property
    def pending(self) -> int:
        """Queued jobs, all classes."""
        return self._pending

    @property
    def in_flight(self) -> int:
        """Dispatches running."""
        return len(self._running)

    @property
    def tokens_in_use(self) -> int:
        """Tokens held by running dispatches."""
        return self._tokens.in_use

    @property
    def token_capacity(self) -> int:
        """Tokens in the pool."""
        return self._tokens.capacity

    @property
    def busy_lanes(self) -> int:
        """Lanes running a dispatch."""
        return self._lanes.busy

    def lane_busy(self, lane: int) -> bool:
        """Whether lane `lane` holds a dispatch (from `poll` until `complete` or `fail`):
        the one answer the gateway's metrics, /v1/lanes and contention features use."""
        return self._lanes.is_busy(lane)

    @property
    def lanes(self) -> int:
        """Lanes in the pool, every group."""
        return self._lanes.size
