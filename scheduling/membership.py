"""Lanes joining and leaving at run time, and the one retry of a dispatch whose lane
was lost: the scheduling core's half of a cluster whose nodes come and go.

A mixin of `Scheduler` (like scheduling/scheduler_counts.py), so that
scheduling/scheduler.py keeps to its decisions. Retries go first in `poll`: a
lost dispatch already waited its turn once, and its jobs are the oldest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from scheduling.job import Dispatch, Job, Outcome
from scheduling.placement import Placement
from scheduling.residency import Residency

if TYPE_CHECKING:
    from scheduling.admission import Estimate
    from scheduling.lane_groups import LaneGroup

#: Appended to a lost dispatch's reason when its retry could not meet any deadline.
NO_TIME_TO_RETRY = "; no time left to retry it on another lane"


class Membership:
    """Add, place and remove lanes; requeue a lost dispatch and retry it once."""

    _place: Placement
    _groups: list[LaneGroup]
    _lane_end: list[Estimate]
    _running: dict[int, Dispatch]
    _retries: list[list[tuple[Dispatch, str]]]
    _failed: list[Job]
    _residency: Residency
    _next_dispatch_id: int
    hop_s: float

    def _release(self, dispatch: Dispatch, now: float) -> None: ...
    def _finish(self, job: Job, now: float, outcome: Outcome, reason: str) -> None: ...
    def _note_lane_end(self, group: LaneGroup, dispatch: Dispatch, now: float) -> None: ...
    # Defined by ModelResidency, which comes before this mixin in Scheduler's bases.
    def _swap_in(self, dispatch: Dispatch, now: float) -> None: ...
    def _warm_on(self, key: tuple[str, str, str]) -> Callable[[int], bool] | None: ...

    def add_lane(self, group: str, node: str) -> int:
        """A new idle lane of lane group `group` on `node`; its index (never reused)."""
        index = self._group_index(group)
        lane = self._place.add_lane(index, node)
        self._lane_end.append((0.0, 0.0))
        return lane

    def place(self, lane: int, node: str) -> None:
        """Move idle lane `lane` to `node` (start-up: where its worker was put)."""
        self._place.place(lane, node)

    def remove_lane(self, lane: int, now: float) -> None:
        """Lane `lane` leaves: at once if idle, else when its running dispatch ends."""
        del now  # the core's calls all take the time; leaving needs none yet
        self._place.remove_lane(lane)
        self._residency.remove_lane(lane)

    def node_of(self, lane: int) -> str:
        """The node lane `lane` is (or was) on."""
        return self._place.node_of(lane)

    def live_lanes(self) -> list[int]:
        """Lanes not removed, in index order."""
        return self._place.live_lanes()

    def requeue(self, dispatch: Dispatch, now: float, reason: str) -> list[Job]:
        """`dispatch`'s lane was lost (its node died): lane and tokens come back, and
        it is retried once, on another lane of its group, as soon as one is free and
        its predicted end still meets the latest deadline among its jobs. A dispatch
        already retried fails instead. Returns the jobs failed now (outcome "error",
        error=reason), each exactly once."""
        self._release(dispatch, now)
        if dispatch.retried:
            return self._fail_parts(dispatch.parts, now, reason)
        self._retries[dispatch.group].append((dispatch, reason))
        return []

    def take_failed(self) -> list[Job]:
        """Jobs whose retry was given up inside `poll` since the last call."""
        failed, self._failed = self._failed, []
        return failed

    def _poll_retries(self, group: LaneGroup, now: float, out: list[Dispatch]) -> bool:
        """Start the group's waiting retries on free lanes; False if one is blocked on
        tokens (strict head of line: nothing else may start in this poll)."""
        waiting = self._retries[group.index]
        lanes = self._place.lanes
        while waiting and lanes.idle[group.index]:
            lost, reason = waiting[0]
            live = [p for p in lost.parts if p.job.outcome is None]
            if not live:  # every job was cancelled meanwhile: nothing to run
                waiting.pop(0)
                self._fail_parts(lost.parts, now, reason)
                continue
            if self._retry_late(group, lost, live, now):
                waiting.pop(0)
                self._failed += self._fail_parts(lost.parts, now, reason + NO_TIME_TO_RETRY)
                continue
            key = (lost.workload, lost.backend, lost.precision)
            lane = self._place.acquire(group.index, lost.tokens, self._warm_on(key))
            if lane is None:
                return False
            waiting.pop(0)
            out.append(self._rebook(group, lost, lane, now))
        return True

    def _retry_late(self, group: LaneGroup, lost: Dispatch, live: Sequence, now: float) -> bool:
        """Whether the retry, started now, would end after every live job's deadline."""
        latest = max(part.job.deadline for part in live)
        model = group.model
        if model is None:
            return now > latest
        mean = model.predict(lost.workload, lost.backend, lost.precision, lost.samples)
        return now + mean + self.hop_s > latest

    def _rebook(self, group: LaneGroup, lost: Dispatch, lane: int, now: float) -> Dispatch:
        """The lost dispatch's parts, again, on `lane` (its tokens are taken)."""
        did = self._next_dispatch_id
        self._next_dispatch_id = did + 1
        dispatch = Dispatch(
            did,
            lane,
            lost.workload,
            lost.backend,
            lost.precision,
            lost.parts,
            lost.tokens,
            now,
            group.index,
            retried=True,
        )
        for part in lost.parts:
            part.job.lane = lane
            part.job.microbatch_id = did
        self._swap_in(dispatch, now)
        self._note_lane_end(group, dispatch, now)
        self._running[did] = dispatch
        return dispatch

    def _fail_parts(self, parts: Sequence, now: float, reason: str) -> list[Job]:
        """The parts will not run: each job not yet ended fails, once."""
        failed: list[Job] = []
        for part in parts:
            job = part.job
            job.parts_in_flight -= 1
            if job.outcome is None:
                self._finish(job, now, "error", reason)
                failed.append(job)
        return failed

    def _group_index(self, name: str) -> int:
        for group in self._groups:
            if group.config.name == name:
                return group.index
        raise ValueError(f"no lane group {name!r}; have {[g.config.name for g in self._groups]}")
