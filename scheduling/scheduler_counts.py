"""The scheduler's counters and read-only views (queue depth, lanes, tokens,
dispatches, lane groups, caps).

A mixin so that `scheduling/scheduler.py` keeps to its decisions: it owns the
state these read, and the gateway's metrics and the simulator only read it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduling.config import LaneGroupConfig
from scheduling.job import Dispatch, Job
from scheduling.microbatch import GroupKey
from scheduling.placement import Placement
from scheduling.resources import LanePool
from scheduling.service_time import ServiceTimeModel

if TYPE_CHECKING:
    from scheduling.lane_groups import LaneGroup


class SchedulerCounts:
    """Counters of a Scheduler; the scheduler sets the attributes they read."""

    _groups: list[LaneGroup]
    _group_of_class: dict[str, LaneGroup]
    _queued: dict[str, int]
    _pending: int
    _running: dict[int, Dispatch]
    _place: Placement
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
        """Tokens held by running dispatches, every node."""
        return self._place.tokens_in_use

    @property
    def token_capacity(self) -> int:
        """Tokens of every node with a live lane (scheduler.tokens.capacity each)."""
        return self._place.token_capacity

    @property
    def busy_lanes(self) -> int:
        """Lanes running a dispatch."""
        return self._lanes.busy

    def lane_busy(self, lane: int) -> bool:
        """Whether lane `lane` holds a dispatch (from `poll` until `complete` or `fail`):
        the one answer the gateway's metrics, /v1/lanes and contention features use."""
        return self._lanes.is_busy(lane)

    def group_lanes(self, job: Job) -> int:
        """Live lanes of the group that runs `job`'s class (nodes join and leave)."""
        return self._lanes.counts[self._group_of_class[job.job_class].index]

    @property
    def lanes(self) -> int:
        """Lanes ever created, every group (removed ones included: indexes stay)."""
        return self._lanes.size

    def lane_group(self, lane: int) -> LaneGroupConfig:
        """The group lane `lane` belongs to."""
        return self._groups[self._lanes.group_of[lane]].config

    def service_model(self, job_class: str) -> ServiceTimeModel | None:
        """The (memoised) service-time model of the group that runs `job_class`."""
        group = self._group_of_class[job_class]
        group.sync()
        return group.model

    def dispatch_caps(self, job_class: str, key: GroupKey) -> tuple[int, int]:
        """(merged, alone): most samples of one dispatch of `key` on `job_class`'s lanes."""
        group = self._group_of_class[job_class]
        group.sync()
        if key not in group.solo_caps:
            group.learn(key)
        return group.batch_caps[key], group.solo_caps[key]

    def largest_dispatch(self, workload: str, precision: str) -> int:
        """Most samples any dispatch of `workload` at `precision` may carry, on any lane
        group and whatever its budget: what lanes warm up at and size buffers for. At
        least 1 (a model of which not even one sample fits is refused at submit)."""
        return max(1, self._groups[0].largest(workload, precision))
