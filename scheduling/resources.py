"""What a dispatch holds while it runs: a lane and memory tokens.

Both pools refuse impossible bookkeeping (releasing a free lane, returning
tokens never taken, taking more than is free) with an error, so a driver bug
shows up here rather than as a silent double booking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from heapq import heapify, heappop, heappush


class LanePool:
    """The concurrent executors, in groups, each handed out most recently used first.

    Lanes are numbered 0..size-1 across groups in order (group 0's lanes first);
    lanes added later (`add`) get the next numbers, and a removed lane's number is
    never reused. Free lanes of a group sit in a heap keyed by (time freed, index):
    the lane that became free *last* goes next (its caches and its runtime's threads
    are still warm: with the longest-idle lane first, ResNet-18's median run on a
    2-lane interactive group was 47 ms instead of 42), the lowest index on ties.
    A lane is free, running exactly one dispatch, or gone.
    """

    def __init__(self, counts: int | Sequence[int]) -> None:
        counts = [counts] if isinstance(counts, int) else list(counts)
        if not counts or any(c < 1 for c in counts):
            raise ValueError(f"every lane group needs >= 1 lane, got {counts}")
        #: The group of each lane ever created.
        self.group_of: list[int] = []
        #: Live lanes per group (removed ones not counted).
        self.counts = [0] * len(counts)
        #: Per group: (-time the lane became free, lane index); read-only outside.
        #: Never-used lanes count as freed at -inf: after every used one, in index order.
        self.idle: list[list[tuple[float, int]]] = [[] for _ in counts]
        self._busy: list[bool] = []
        self._gone: list[bool] = []
        self._idle_count = 0
        self._busy_count = 0
        for group, count in enumerate(counts):
            for _ in range(count):
                self.add(group)

    @property
    def size(self) -> int:
        """Lanes ever created (the next lane's index)."""
        return len(self.group_of)

    @property
    def busy(self) -> int:
        """Lanes running a dispatch."""
        return self._busy_count

    @property
    def any_idle(self) -> bool:
        """Whether some lane, of any group, is free."""
        return self._idle_count > 0

    def all_idle(self, group: int) -> bool:
        """Whether no lane of `group` runs a dispatch."""
        return len(self.idle[group]) == self.counts[group]

    def is_busy(self, lane: int) -> bool:
        """Whether lane `lane` runs a dispatch."""
        return self._busy[lane]

    def is_live(self, lane: int) -> bool:
        """Whether lane `lane` exists and was not removed."""
        return 0 <= lane < len(self._gone) and not self._gone[lane]

    def add(self, group: int) -> int:
        """A new free lane in `group` (freed at -inf: after every used lane); its index."""
        lane = len(self.group_of)
        self.group_of.append(group)
        self._busy.append(False)
        self._gone.append(False)
        self.counts[group] += 1
        heappush(self.idle[group], (math.inf, lane))
        self._idle_count += 1
        return lane

    def remove(self, lane: int) -> None:
        """Lane `lane` leaves: it is never handed out again. A busy lane leaves when
        released; an idle one at once."""
        if not self.is_live(lane):
            raise ValueError(f"lane {lane} does not exist or was removed")
        self._gone[lane] = True
        group = self.group_of[lane]
        self.counts[group] -= 1
        if not self._busy[lane]:
            self._drop_idle(group, lane)

    def acquire(self, group: int = 0, fits: Callable[[int], bool] | None = None) -> int | None:
        """The group's lane freed most recently (lowest index on ties) for which
        `fits(lane)` holds, or None if no free lane does."""
        heap = self.idle[group]
        skipped: list[tuple[float, int]] = []
        lane = None
        while heap:
            entry = heappop(heap)
            if fits is None or fits(entry[1]):
                lane = entry[1]
                break
            skipped.append(entry)
        for entry in skipped:
            heappush(heap, entry)
        if lane is not None:
            self._busy[lane] = True
            self._busy_count += 1
            self._idle_count -= 1
        return lane

    def release(self, lane: int, now: float) -> None:
        """Lane `lane` finished its dispatch at `now` (and leaves, if removed meanwhile)."""
        if not self._busy[lane]:
            raise ValueError(f"lane {lane} released while not running a dispatch")
        self._busy[lane] = False
        self._busy_count -= 1
        if self._gone[lane]:
            return
        self._idle_count += 1
        heappush(self.idle[self.group_of[lane]], (-now, lane))

    def _drop_idle(self, group: int, lane: int) -> None:
        heap = [entry for entry in self.idle[group] if entry[1] != lane]
        heapify(heap)
        self.idle[group] = heap
        self._idle_count -= 1


class TokenPool:
    """The device-memory budget: `capacity` tokens, `in_use` held by running dispatches."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"token capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.in_use = 0

    @property
    def free(self) -> int:
        """Tokens not held by any running dispatch."""
        return self.capacity - self.in_use

    def fits(self, tokens: int) -> bool:
        """Whether a dispatch holding `tokens` could start now."""
        return tokens <= self.capacity - self.in_use

    def take(self, tokens: int) -> None:
        """Hold `tokens` for a starting dispatch."""
        if tokens > self.capacity - self.in_use:
            raise ValueError(f"{tokens} tokens requested, only {self.free} of {self.capacity} free")
        self.in_use += tokens

    def give(self, tokens: int) -> None:
        """Return the `tokens` of a finished dispatch."""
        if tokens > self.in_use:
            raise ValueError(f"{tokens} tokens returned, only {self.in_use} in use")
        self.in_use -= tokens
