"""Models coming and going: served models added or dropped at run time, and, under a
lane budget, which lanes hold which models (scheduling/residency.py).

A mixin of `Scheduler` (like scheduling/membership.py), so that
scheduling/scheduler.py keeps to its decisions. Under a budget the core prefers an
idle lane that already holds the dispatch's model, books a swap on a lane that does
not, and counts the cold load into its forecasts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from scheduling.errors import JobTooLarge
from scheduling.job import Dispatch, Job
from scheduling.placement import Placement
from scheduling.residency import ModelKey, Residency, Swap, SwapCounts
from scheduling.tokens import TokenCosts

if TYPE_CHECKING:
    from scheduling.admission import Estimate
    from scheduling.lane_groups import LaneGroup


class ModelResidency:
    """Served models and, per lane, the ones it holds."""

    costs: TokenCosts
    _lane_end: list[Estimate]
    _groups: list[LaneGroup]
    _place: Placement
    _residency: Residency

    def set_workload(self, name: str, base: int) -> None:
        """Serve model `name` at token base `base` from now on (loaded, or replaced, at
        run time): its caps are learned again at once (jobs of it may be queued), and no
        lane holds an older version."""
        self.costs.set_base(name, base)
        self._residency.forget(name)
        for group in self._groups:
            group.relearn(name)

    def forget_workload(self, name: str) -> None:
        """Model `name` is no longer served (unloaded): its jobs are refused as unknown."""
        self.costs.remove(name)
        self._residency.forget(name)
        for group in self._groups:
            group.forget(name)

    # ------------------------------------------------------------ lane budgets
    @property
    def lane_budget(self) -> int | None:
        """MiB of models one lane may hold; None: every lane holds every model."""
        return self._residency.budget

    @property
    def swaps(self) -> SwapCounts:
        """Loads and evictions booked so far, and their predicted load seconds."""
        return self._residency.counts

    def model_mb(self, key: ModelKey) -> float:
        """MiB a lane holds while `key` is loaded (its resident cost)."""
        return self.costs.cost(key[0], key[2]).base

    def preload(self, lane: int, keys: Sequence[ModelKey], now: float) -> list[ModelKey]:
        """Of `keys`, those lane `lane` loads at start: first the ones no other live lane
        holds, then the others, each in order while it fits beside those before it (all,
        without a budget). Lanes filled one after the other so cover as many models as
        their budgets allow between them. The lane holds them from now on."""
        residency = self._residency
        others = {
            k for other in self._place.live_lanes() if other != lane for k in residency.held(other)
        }
        ordered = [k for k in keys if k not in others] + [k for k in keys if k in others]
        return residency.preload(lane, [(k, self.model_mb(k)) for k in ordered], now)

    def fitting(self, keys: Sequence[ModelKey]) -> list[ModelKey]:
        """Of `keys`, in order, those an empty lane loads (a lane about to join)."""
        return self._residency.fill([(k, self.model_mb(k)) for k in keys])

    def room_for(self, keys: Sequence[ModelKey], now: float) -> set[int]:
        """The live lanes with room for all of `keys` beside what they hold, which hold
        them from now on (a model loaded at run time: the other lanes load it on demand);
        every live lane without a budget."""
        residency = self._residency
        models = [(k, self.model_mb(k)) for k in keys]
        chosen = set()
        for lane in self._place.live_lanes():
            if len(residency.fill(models, residency.used_mb(lane))) == len(models):
                residency.preload(lane, models, now)
                chosen.add(lane)
        return chosen

    def lane_models(self, lane: int) -> list[ModelKey] | None:
        """The models lane `lane` holds, most recently used first; None without a budget."""
        residency = self._residency
        return residency.held(lane) if residency.enabled else None

    def note_load(self, workload: str, seconds: float) -> None:
        """A lane loaded and warmed `workload` in `seconds`: later swaps predict that."""
        self._residency.note_load(workload, seconds)

    def load_failed(self, dispatch: Dispatch) -> None:
        """`dispatch`'s lane could not load its model: the lane does not hold it (its
        evictions stand). Call before `fail`."""
        key = (dispatch.workload, dispatch.backend, dispatch.precision)
        self._residency.drop(dispatch.lane, key)

    def _too_large(self, job: Job) -> JobTooLarge:
        """Why `job` can never run: its model exceeds the lane budget, or even one
        sample exceeds the token capacity."""
        cost = self.costs.cost(job.workload, job.precision)
        budget = self._residency.budget
        if budget is not None and cost.base > budget:
            return JobTooLarge(
                job.workload, job.precision, math.ceil(cost.base), budget, cost.source, "lane"
            )
        return JobTooLarge(
            job.workload, job.precision, cost.tokens(1), self._place.capacity, cost.source
        )

    def _warm_on(self, key: ModelKey) -> Callable[[int], bool] | None:
        """The lanes to try first for a dispatch of `key`: those holding it (None: any)."""
        residency = self._residency
        if not residency.enabled:
            return None
        return lambda lane: residency.holds(lane, key)

    def _warm_soon(self, group: LaneGroup, key: ModelKey, now: float) -> bool:
        """Whether a dispatch of `key` should wait for a busy lane that holds it: no idle
        lane of `group` does, and one that does is predicted to free up before a cold
        lane could load it (a swap would cost more than the wait, and evict)."""
        residency = self._residency
        if not residency.enabled:
            return False
        warm = self._warm_lanes(group, key)
        if not warm or not all(self._place.lanes.is_busy(lane) for lane in warm):
            return False
        cold = now + residency.load_time(key[0], self.model_mb(key))
        return any(self._lane_end[lane][0] < cold for lane in warm)

    def _swap_in(self, dispatch: Dispatch, now: float) -> None:
        """Book what `dispatch`'s lane must load (and evict) to run it, on the dispatch."""
        residency = self._residency
        if not residency.enabled:
            return
        key = (dispatch.workload, dispatch.backend, dispatch.precision)
        mb = self.model_mb(key)
        swap: Swap | None = residency.plan(dispatch.lane, key, mb)
        residency.commit(dispatch.lane, key, mb, swap, now)
        dispatch.swap = swap

    def _cold_start_s(self, group: LaneGroup, key: ModelKey) -> float:
        """The load a job of `key` waits for if no live lane of `group` holds it."""
        residency = self._residency
        if not residency.enabled or self._warm_lanes(group, key):
            return 0.0
        return residency.load_time(key[0], self.model_mb(key))

    def _warm_lanes(self, group: LaneGroup, key: ModelKey) -> list[int]:
        """The live lanes of `group` that hold `key` (under a budget)."""
        lanes, residency = self._place.lanes, self._residency
        return [
            lane
            for lane, g in enumerate(lanes.group_of)
            if g == group.index and lanes.is_live(lane) and residency.holds(lane, key)
        ]
