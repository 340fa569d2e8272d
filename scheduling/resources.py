"""What a dispatch holds while it runs: a lane and memory tokens.

Both pools refuse impossible bookkeeping (releasing a free lane, returning
tokens never taken, taking more than is free) with an error, so a driver bug
shows up here rather than as a silent double booking.
"""

from __future__ import annotations

import math
from heapq import heapify, heappop, heappush


class LanePool:
    """The concurrent executors, handed out longest-idle first.

    Free lanes sit in a heap keyed by (time freed, index): the lane that became
    free first goes next, the lowest index on ties. A lane is free or running
    exactly one dispatch.
    """

    def __init__(self, lanes: int) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.size = lanes
        #: (time the lane became free, lane index); read-only outside this class.
        #: Never-used lanes count as free since -inf, so they go in index order.
        self.idle: list[tuple[float, int]] = [(-math.inf, i) for i in range(lanes)]
        heapify(self.idle)
        self._busy = [False] * lanes

    @property
    def busy(self) -> int:
        """Lanes running a dispatch."""
        return self.size - len(self.idle)

    def acquire(self) -> int:
        """The lane that became free first (lowest index on ties); IndexError if none."""
        _, lane = heappop(self.idle)
        self._busy[lane] = True
        return lane

    def release(self, lane: int, now: float) -> None:
        """Lane `lane` finished its dispatch at `now`."""
        if not self._busy[lane]:
            raise ValueError(f"lane {lane} released while not running a dispatch")
        self._busy[lane] = False
        heappush(self.idle, (now, lane))


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
