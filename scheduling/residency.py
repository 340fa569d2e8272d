"""Which models each lane holds loaded, within its memory budget: loads on demand and
least-recently-used eviction (`tokens.lane_budget`, scheduling/config.py).

Without a budget every lane holds every served model and nothing here acts. With
one, a lane holds the models whose resident cost (`TokenCost.base`, MiB: weights
plus the runtime's arena) fits its budget. A dispatch of a model its lane does not
hold carries a `Swap`: the lane drops `evict` (least recently used first), loads
the model, then runs the dispatch.

Never a model in use: a lane runs one dispatch at a time and the core hands out
only idle lanes, so when a swap is planned nothing on that lane is running. A
dispatch's own model is never among its evictions.

The load time a swap is predicted to take is the model's last measured one
(`note_load`), the configured `load_ms` until then, or `load_ms_per_mib` times its
resident MiB: admission counts it into a cold job's finish, and the lane's
predicted end includes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: (workload, backend, precision): what a lane loads.
ModelKey = tuple[str, str, str]


@dataclass(frozen=True)
class Swap:
    """What a lane does before a dispatch of a model it does not hold."""

    #: Models to unload first, least recently used first.
    evict: tuple[ModelKey, ...]
    #: Predicted seconds to load and warm the dispatch's model.
    load_s: float


@dataclass
class SwapCounts:
    """Swaps planned so far: loads, evictions and their predicted load seconds."""

    loads: int = 0
    evictions: int = 0
    load_s: float = 0.0


class Residency:
    """Per lane, the models it holds (with when each was last used) and their MiB."""

    def __init__(
        self, budget: int | None, load_ms: Mapping[str, float], load_ms_per_mib: float
    ) -> None:
        #: MiB of models one lane may hold; None: every lane holds everything.
        self.budget = budget
        self.counts = SwapCounts()
        self._held: dict[int, dict[ModelKey, float]] = {}
        self._mb: dict[int, dict[ModelKey, float]] = {}
        self._load_s = {name: ms / 1e3 for name, ms in load_ms.items()}
        self._load_s_per_mib = load_ms_per_mib / 1e3

    @property
    def enabled(self) -> bool:
        """Whether lanes hold only what fits (a budget is set)."""
        return self.budget is not None

    def holds(self, lane: int, key: ModelKey) -> bool:
        """Whether lane `lane` has `key` loaded (always, without a budget)."""
        return self.budget is None or key in self._held.get(lane, ())

    def held(self, lane: int) -> list[ModelKey]:
        """The models lane `lane` holds, most recently used first (budget mode)."""
        held = self._held.get(lane, {})
        return sorted(held, key=lambda k: -held[k])

    def used_mb(self, lane: int) -> float:
        """MiB of the models lane `lane` holds."""
        return sum(self._mb.get(lane, {}).values())

    def fill(self, models: Sequence[tuple[ModelKey, float]], used_mb: float = 0.0) -> list:
        """Of `models` ((key, MiB), in order), those a lane holding `used_mb` would load:
        each that still fits beside those before it (all of them, without a budget)."""
        if self.budget is None:
            return [key for key, _ in models]
        chosen = []
        for key, mb in models:
            if used_mb + mb <= self.budget + 1e-9:
                used_mb += mb
                chosen.append(key)
        return chosen

    def preload(
        self, lane: int, models: Sequence[tuple[ModelKey, float]], now: float
    ) -> list[ModelKey]:
        """`fill` for lane `lane` beside what it holds, booked: it holds them from `now`.
        Returns the keys it holds of `models`."""
        if self.budget is None:
            return [key for key, _ in models]
        held = [(k, mb) for k, mb in models if self.holds(lane, k)]
        fresh = [(k, mb) for k, mb in models if not self.holds(lane, k)]
        added = set(self.fill(fresh, self.used_mb(lane)))
        for key, mb in fresh:
            if key in added:
                self._add(lane, key, mb, now)
        chosen = {k for k, _ in held} | added
        return [key for key, _ in models if key in chosen]

    def plan(self, lane: int, key: ModelKey, mb: float) -> Swap | None:
        """What lane `lane` must do to run `key` (`mb` MiB): None if it holds it, else
        the least recently used models to evict until `key` fits, and the load time."""
        if self.holds(lane, key):
            return None
        assert self.budget is not None
        held = self._held.get(lane, {})
        sizes = self._mb.get(lane, {})
        free = self.budget - sum(sizes.values())
        evict: list[ModelKey] = []
        for victim in sorted(held, key=held.__getitem__):
            if free + 1e-9 >= mb:
                break
            evict.append(victim)
            free += sizes[victim]
        if free + 1e-9 < mb:
            raise ValueError(f"{'/'.join(key)} ({mb:.0f} MiB) exceeds the lane budget")
        return Swap(tuple(evict), self.load_time(key[0], mb))

    def commit(self, lane: int, key: ModelKey, mb: float, swap: Swap | None, now: float) -> None:
        """Lane `lane` runs `key` from `now`: `swap` (if any) is booked, `key` is its most
        recently used model."""
        if swap is not None:
            for victim in swap.evict:
                self._drop(lane, victim)
            self._add(lane, key, mb, now)
            self.counts.loads += 1
            self.counts.evictions += len(swap.evict)
            self.counts.load_s += swap.load_s
        elif self.budget is not None:
            self._held[lane][key] = now

    def drop(self, lane: int, key: ModelKey) -> None:
        """Lane `lane` does not hold `key` after all (its load failed)."""
        self._drop(lane, key)

    def forget(self, workload: str) -> None:
        """`workload` is unloaded or replaced: no lane holds any version of it."""
        for lane, held in self._held.items():
            for key in [k for k in held if k[0] == workload]:
                self._drop(lane, key)

    def remove_lane(self, lane: int) -> None:
        """Lane `lane` left: what it held went with it."""
        self._held.pop(lane, None)
        self._mb.pop(lane, None)

    def note_load(self, workload: str, seconds: float) -> None:
        """A lane took `seconds` to load `workload`: its next swaps are predicted so."""
        self._load_s[workload] = seconds

    def load_time(self, workload: str, mb: float) -> float:
        """Predicted seconds to load and warm `workload` (`mb` MiB resident) on a lane:
        measured, else configured, else in proportion to its size."""
        seconds = self._load_s.get(workload)
        return seconds if seconds is not None else mb * self._load_s_per_mib

    def _add(self, lane: int, key: ModelKey, mb: float, now: float) -> None:
        self._held.setdefault(lane, {})[key] = now
        self._mb.setdefault(lane, {})[key] = mb

    def _drop(self, lane: int, key: ModelKey) -> None:
        self._held.get(lane, {}).pop(key, None)
        self._mb.get(lane, {}).pop(key, None)
