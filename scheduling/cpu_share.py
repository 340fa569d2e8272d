"""Simulated executors: how long a started dispatch takes to finish.

Two models of the machine under the lanes:

- `IndependentLanes`: every lane has cores of its own; a dispatch ends exactly
  its service time after it starts (the simulator's original model), plus the
  network hop of a lane on another node.
- `SharedCores`: lanes share `cores` CPUs by OS priority, as the gateway runs
  them. A running dispatch has a lane with `threads` intra-op threads and a
  priority. Normal-priority dispatches get the CPU first: all at full speed
  while their threads fit the cores, otherwise slowed evenly to fit.
  Low-priority ones (SCHED_IDLE lanes) share what is left, slowed evenly, and
  stop entirely while normal ones use every core. A dispatch's service time is
  its work at full speed; its progress rate changes whenever a dispatch starts
  or ends, so ends are recomputed at every event (a handful of running
  dispatches: cheap). `overhead(cpu_s, now)` adds CPU work that belongs to no
  lane — the gateway answering a request on its event loop, at normal priority,
  one thread — so that a flood of requests slows the lanes as it does live.

Both are pure: times are arguments, and the caller's event loop asks
`next_end()` and collects `finished(now)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Protocol

from scheduling.job import Dispatch

#: Work left below this (seconds) counts as done: floating-point slack of rate updates.
_EPSILON = 1e-12


class Executor(Protocol):
    """Runs started dispatches on a virtual clock."""

    def start(self, dispatch: Dispatch, service_s: float, now: float) -> None:
        """`dispatch` starts at `now` and needs `service_s` seconds at full speed."""
        ...

    def next_end(self) -> float:
        """When the next running dispatch ends (inf if none runs)."""
        ...

    def finished(self, now: float) -> list[Dispatch]:
        """Dispatches ending at or before `now`, in end order; they leave the executor."""
        ...

    def overhead(self, cpu_s: float, now: float) -> None:
        """`cpu_s` seconds of normal-priority, single-thread work outside the lanes."""
        ...


class IndependentLanes:
    """Each lane on its own cores: end = start + service time (+ `hop_s`).

    `hop_s` is the network round trip to a lane on another machine
    (scheduling/sim_cluster.py): the lane is held that much longer.
    """

    def __init__(self, hop_s: float = 0.0) -> None:
        self._ends: list[tuple[float, int, Dispatch]] = []  # (end, seq, dispatch)
        self._seq = 0
        self._hop = hop_s

    def start(self, dispatch: Dispatch, service_s: float, now: float) -> None:
        # Without a hop, `+ 0.0` is exact: one machine ends exactly as it always did.
        heappush(self._ends, (now + service_s + self._hop, self._seq, dispatch))
        self._seq += 1

    def next_end(self) -> float:
        return self._ends[0][0] if self._ends else float("inf")

    def finished(self, now: float) -> list[Dispatch]:
        out = []
        while self._ends and self._ends[0][0] <= now:
            out.append(heappop(self._ends)[2])
        return out

    def overhead(self, cpu_s: float, now: float) -> None:
        """Ignored: lanes with cores of their own share nothing with the event loop."""


@dataclass(frozen=True)
class LaneCpu:
    """How one lane uses the CPU."""

    threads: int
    #: "normal" or "low" (yields to normal lanes).
    priority: str


#: How work outside the lanes (the event loop) runs: one thread, normal priority.
_OVERHEAD = LaneCpu(1, "normal")


@dataclass
class _Running:
    #: None for overhead work (no lane, nothing to report when it ends).
    dispatch: Dispatch | None
    #: Seconds of work left at full speed.
    left: float
    cpu: LaneCpu
    rate: float = 0.0


class SharedCores:
    """Lanes sharing `cores` CPUs by priority (module docstring)."""

    def __init__(self, cores: float, lanes: Sequence[LaneCpu]) -> None:
        if cores <= 0:
            raise ValueError(f"cores must be > 0, got {cores}")
        self.cores = float(cores)
        self.lanes = list(lanes)
        self._running: list[_Running] = []
        self._clock = 0.0

    def start(self, dispatch: Dispatch, service_s: float, now: float) -> None:
        self._advance(now)
        self._running.append(_Running(dispatch, service_s, self.lanes[dispatch.lane]))
        self._rates()

    def overhead(self, cpu_s: float, now: float) -> None:
        if cpu_s <= 0:
            return
        self._advance(now)
        self._running.append(_Running(None, cpu_s, _OVERHEAD))
        self._rates()

    def next_end(self) -> float:
        best = float("inf")
        for r in self._running:
            if r.rate > 0:
                best = min(best, self._clock + r.left / r.rate)
        return best

    def finished(self, now: float) -> list[Dispatch]:
        self._advance(now)
        done = [r for r in self._running if r.left <= _EPSILON]
        if not done:
            return []
        self._running = [r for r in self._running if r.left > _EPSILON]
        self._rates()
        return [r.dispatch for r in done if r.dispatch is not None]

    def rate_of(self, dispatch: Dispatch) -> float:
        """The current speed of a running dispatch (1.0: full speed), for tests."""
        return next(r.rate for r in self._running if r.dispatch is dispatch)

    def _advance(self, now: float) -> None:
        dt = now - self._clock
        if dt > 0:
            for r in self._running:
                r.left -= r.rate * dt
                # A dispatch due now may land a hair above zero: snap it.
                if r.left < _EPSILON * max(1.0, r.rate):
                    r.left = 0.0
        self._clock = max(self._clock, now)

    def _rates(self) -> None:
        normal = [r for r in self._running if r.cpu.priority != "low"]
        low = [r for r in self._running if r.cpu.priority == "low"]
        demand = sum(r.cpu.threads for r in normal)
        speed = 1.0 if demand <= self.cores else self.cores / demand
        for r in normal:
            r.rate = speed
        left = max(0.0, self.cores - demand)
        demand_low = sum(r.cpu.threads for r in low)
        speed_low = min(1.0, left / demand_low) if demand_low else 0.0
        for r in low:
            r.rate = speed_low
