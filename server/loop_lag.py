"""Event-loop lag: how long ready work waits for the loop, measured as it runs.

A request spends time the scheduling core never sees: waiting for the event loop
before its handler stamps its arrival, at every hand-off of a dispatch to its
lane and back, and after its job ends before the answer is written. Each is the
loop's lag — near zero when idle, several ms when a flood of requests keeps it
busy (measured: 4 ms at p50 and 11 ms at p99 under 5× overload on 2 cores). A
timer that should fire every `interval_s` measures how late it fires; the recent
high quantile of that lateness is the hop admission adds before and after a job
and to each dispatch it forecasts (`Scheduler.hop_s`).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

#: Timer period, and how many recent samples count (5 s of history).
INTERVAL_S = 0.02
WINDOW = 250
QUANTILE = 95.0
#: Publish the quantile every this many samples (0.1 s): the hop moves slowly anyway.
PUBLISH_EVERY = 5


class LoopLag:
    """The recent lateness of a periodic timer: a window of samples and its quantile."""

    def __init__(self, window: int = WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)

    def add(self, lateness_s: float) -> None:
        """One timer fired `lateness_s` seconds after it was due."""
        self._samples.append(max(0.0, lateness_s))

    def quantile(self, q: float = QUANTILE) -> float:
        """The q-th percentile of recent lateness, seconds (0 before any sample)."""
        if not self._samples:
            return 0.0
        # Nearest rank over a few hundred floats: plain sorted() is several times
        # cheaper than numpy's percentile at this size, and this runs on the loop.
        ranked = sorted(self._samples)
        return ranked[min(len(ranked) - 1, math.ceil(q / 100.0 * len(ranked)) - 1)]


async def monitor(
    lag: LoopLag,
    publish: Callable[[float], None],
    clock: Callable[[], float],
    interval_s: float = INTERVAL_S,
) -> None:
    """Sample the loop's lag for ever; `publish(recent p95)` every PUBLISH_EVERY samples."""
    samples = 0
    while True:
        due = clock() + interval_s
        await asyncio.sleep(interval_s)
        lag.add(clock() - due)
        samples += 1
        if samples % PUBLISH_EVERY == 0:
            publish(lag.quantile())
