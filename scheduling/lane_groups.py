"""One lane group's share of the scheduling core: policy, service model, budget, caps.

Each class is run by exactly one group (`SchedulerConfig.groups()`), so a job's
group follows from its class. A group plans with its own service-time model
(its lanes may run another thread count, hence other service times) and its own
dispatch budget (`max_dispatch_ms`), which bound the caps learned here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scheduling.admission import Estimate, chunk_times
from scheduling.config import LaneGroupConfig, SchedulerConfig
from scheduling.microbatch import GroupKey
from scheduling.policies import Policy
from scheduling.service_time import CachedServiceTime, ServiceTimeModel
from scheduling.tokens import TokenCosts, max_samples_within

#: Time constant (seconds) of a group's arrival-rate estimate.
RATE_WINDOW_S = 2.0

#: One service-time model for every lane group, or one per group name.
ServiceModels = ServiceTimeModel | Mapping[str, ServiceTimeModel] | None


class LaneGroup:
    """A group's policy, (memoised) model, and per-model dispatch caps."""

    def __init__(
        self,
        index: int,
        config: LaneGroupConfig,
        scheduler: SchedulerConfig,
        costs: TokenCosts,
        model: ServiceTimeModel | None,
    ) -> None:
        self.index = index
        self.config = config
        self.model = _cached(model)
        self._costs = costs
        self._capacity = scheduler.tokens.capacity
        self._lane_budget = scheduler.tokens.lane_budget
        self._split = scheduler.max_dispatch_samples or scheduler.tokens.capacity
        self._batch_cap = scheduler.batch_cap()
        #: Per (workload, backend, precision): most samples in one dispatch, merged or alone.
        self.batch_caps: dict[GroupKey, int] = {}
        self.solo_caps: dict[GroupKey, int] = {}
        #: Orders the group's queued jobs; set by the scheduler.
        self.policy: Policy
        #: When a dispatch of this group last ended (-inf: never).
        self.last_end = -math.inf
        # Arrivals per second, exponentially decayed with time constant RATE_WINDOW_S.
        self._rate = 0.0
        self._rate_at = -math.inf

    def sync(self) -> None:
        """Follow the model: once its version moved, forget memoised answers and
        relearn the caps, which the dispatch budget reads from its planning quantile."""
        model = self.model
        if model is not None and model.sync():
            for key in self.solo_caps:  # learn() rewrites existing keys only
                self.learn(key)

    def note_arrival(self, now: float) -> float:
        """Count a job arriving at `now`; the group's recent arrival rate (jobs/s)."""
        decay = math.exp(-(now - self._rate_at) / RATE_WINDOW_S) if self._rate_at > -math.inf else 0
        self._rate = self._rate * decay + 1.0 / RATE_WINDOW_S
        self._rate_at = now
        return self._rate

    def load(self, rate: float, service_s: float, lanes: int) -> float:
        """Offered load of `rate` jobs/s of `service_s` each on this group's `lanes` lanes."""
        return rate * service_s / max(1, lanes)

    def largest(self, workload: str, precision: str) -> int:
        """Most samples one dispatch of `workload` may carry before the budget: the
        larger sample cap (split or merged), cut to what the tokens hold (0: none fits,
        nor does a model too big for the lane budget)."""
        cost = self._costs.cost(workload, precision)  # UnknownWorkload if not served
        if self._lane_budget is not None and cost.base > self._lane_budget + 1e-9:
            return 0
        return max_samples_within(cost, self._capacity, max(self._split, self._batch_cap))

    def learn(self, key: GroupKey) -> int:
        """(Re)compute the caps of `key` from tokens, sample caps and the budget; the solo cap."""
        workload, _, precision = key
        fits = self.largest(workload, precision)
        if fits:
            fits = min(fits, self._within_budget(key, max(self._split, self._batch_cap)))
        self.solo_caps[key] = min(self._split, fits)
        self.batch_caps[key] = min(self._batch_cap, fits)
        return self.solo_caps[key]

    def estimates(
        self, key: GroupKey, samples: int, cap: int, hop: float = 0.0, scale: float = 1.0
    ) -> list[Estimate]:
        """(mean, planning excess) of each dispatch `samples` samples of `key` split into,
        each mean lengthened by `hop` (handing the dispatch to its lane and back) and
        each excess times `scale` (another quantile than the plan's)."""
        model = self.model
        assert model is not None, "estimates need a service model"

        def estimate(n: int) -> Estimate:
            mean = model.predict(*key, n)
            return mean + hop, scale * max(0.0, model.plan(*key, n) - mean)

        return chunk_times(samples, cap, estimate)

    def relearn(self, workload: str) -> None:
        """Learn the caps of `workload` again (its cost changed): its queued jobs keep
        being planned, now with the new caps."""
        for key in [k for k in self.solo_caps if k[0] == workload]:
            self.learn(key)

    def forget(self, workload: str) -> None:
        """Drop the caps learned for `workload` (its cost changed, or it is gone)."""
        for key in [k for k in self.solo_caps if k[0] == workload]:
            del self.solo_caps[key]
            self.batch_caps.pop(key, None)

    def _within_budget(self, key: GroupKey, limit: int) -> int:
        """Most samples (1..limit) whose planning quantile fits the budget; limit if none."""
        budget_ms = self.config.max_dispatch_ms
        if budget_ms is None or self.model is None:
            return limit
        budget = budget_ms / 1e3
        plan = self.model.plan
        lo, hi = 1, limit  # a single sample always runs, however slow: it cannot be split
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if plan(*key, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def model_for(models: ServiceModels, group: str) -> ServiceTimeModel | None:
    """The model of lane group `group`: the single model, or its entry in the mapping."""
    if models is None or not isinstance(models, Mapping):
        return models
    if group not in models:
        raise ValueError(f"no service-time model for lane group {group!r}; have {sorted(models)}")
    return models[group]


def _cached(model: ServiceTimeModel | None) -> CachedServiceTime | None:
    if model is None or isinstance(model, CachedServiceTime):
        return model
    return CachedServiceTime(model)
