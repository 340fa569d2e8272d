"""The scheduling core: a pure, synchronous state machine driven by its caller.

    submit(job, now)      a job enters the queue
    poll(now)             dispatches to start now (lane, parts, tokens)
    next_wakeup(now)      when a batching window needs attention
    complete / fail       a lane finished; its lane and tokens come back
    cancel(job_id, now)   the client went away

The live gateway and the simulator drive the same object; only the executor
differs. `now` is always an argument: nothing here reads a clock.

Decisions, in order, each time a lane is free:

1. The policy picks the best *ready* job (the head). A job of a class in
   `microbatch.classes` is held until its window (enqueue + window_ms) ends or
   its group holds a full batch; other jobs are ready at once.
2. The head's dispatch is formed: its next part (at most the cap), then, if it
   is batchable, whole compatible queued jobs in policy order while they fit
   (first fit). With a service model a companion also has to keep the
   dispatch's predicted end before the tightest deadline among the jobs it
   finishes that would make theirs: the micro-batch is the largest whose
   predicted service time (a quantile, if the model answers one) meets it.
   The cap of a merged dispatch is min(max_batch, max_dispatch_samples); a
   non-batchable job's part is at most max_dispatch_samples; both are also cut
   to what the token capacity can ever hold, so every dispatch fits an idle
   device.
3. Head of line: if the dispatch's tokens do not fit the free tokens, nothing
   else starts in this poll. No job overtakes a blocked head, so nothing starves
   behind a bigger job and priority order is never broken by token pressure; the
   price is an idle lane until a completion frees tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduling.config import SchedulerConfig
from scheduling.errors import JobTooLarge, QueueFull, UnknownWorkload
from scheduling.job import JOB_CLASSES, Dispatch, Job, Outcome, Part
from scheduling.microbatch import GroupKey, MicroBatcher
from scheduling.policies import make_policy
from scheduling.resources import LanePool, TokenPool
from scheduling.service_time import CachedServiceTime, ServiceTimeModel
from scheduling.tokens import token_cost

#: Reason recorded on a job dropped by deadline-aware shedding.
SHED_REASON = "cannot meet its deadline even if started now"


def max_samples_within(base: int, precision: str, capacity: int) -> int:
    """Largest sample count whose dispatch fits `capacity` tokens (0 if none)."""
    lo, hi = 0, capacity  # each sample costs at least one token, so hi is an upper bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if token_cost(base, mid, precision) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Scheduler:
    """Queue, policy, micro-batcher, token pool and lanes behind five calls."""

    def __init__(
        self,
        config: SchedulerConfig,
        token_bases: Mapping[str, int],
        service_model: ServiceTimeModel | None = None,
    ) -> None:
        self.config = config
        self._bases = dict(token_bases)
        if service_model is not None and not isinstance(service_model, CachedServiceTime):
            service_model = CachedServiceTime(service_model)
        #: Memoised; call `refresh_predictions()` when the underlying model changes.
        self.service_model = service_model
        self.policy = make_policy(config.policy, config, service_model)
        self._mb = MicroBatcher(config.microbatch)
        self._lanes = LanePool(config.lanes)
        self._tokens = TokenPool(config.tokens.capacity)
        self._split = config.max_dispatch_samples or config.tokens.capacity
        self._batch_cap = config.batch_cap()
        # Per group: most samples in one dispatch, batchable or alone (learned at first submit).
        self._batch_caps: dict[GroupKey, int] = {}
        self._solo_caps: dict[GroupKey, int] = {}
        self._limits = dict(config.queue_limit or {})
        self._shed_late = config.shed_late
        self._queued: dict[str, int] = dict.fromkeys(JOB_CLASSES, 0)
        self._pending = 0
        #: Admitted jobs without an outcome yet, by id (for cancel).
        self._jobs: dict[int, Job] = {}
        self._running: dict[int, Dispatch] = {}
        self._shed: list[Job] = []
        self._next_dispatch_id = 0

    # ------------------------------------------------------------------ calls

    def submit(self, job: Job, now: float) -> None:
        """Admit `job` at `now` (sets `job.enqueue`).

        Raises UnknownWorkload, JobTooLarge (a one-sample dispatch can never fit
        the token capacity) or QueueFull (its class's queue_limit is reached).
        With shed_late, a job already unable to meet its deadline is shed at
        once: it is reported by `take_shed()`, not queued.
        """
        key = (job.workload, job.backend, job.precision)
        solo_cap = self._solo_caps.get(key)
        if solo_cap is None:
            solo_cap = self._learn_group(key)
        if not solo_cap:
            base = self._bases[job.workload]
            tokens = token_cost(base, 1, job.precision)
            raise JobTooLarge(job.workload, job.precision, tokens, self._tokens.capacity)
        limit = self._limits.get(job.job_class)
        if limit is not None and self._queued[job.job_class] >= limit:
            raise QueueFull(job.job_class, limit)
        if job.id in self._jobs or job.outcome is not None or job.samples < 1:
            raise ValueError(f"job {job.id} cannot be submitted (duplicate, finished or empty)")
        job.enqueue = now
        job.remaining = job.samples
        if self._shed_late and self._late(job, now):
            self._shed_job(job, now, queued=False)
            return
        self._jobs[job.id] = job
        self._queued[job.job_class] += 1
        self._pending += 1
        self.policy.push(job)
        if job.job_class in self._mb.classes:
            self._mb.add(job, key, now)

    def poll(self, now: float) -> list[Dispatch]:
        """The dispatches to start at `now`; each holds a lane and tokens until it ends.

        With shed_late, a not-yet-started job met as head or companion that can
        no longer make its deadline is shed on the way (see `take_shed`).
        """
        idle = self._lanes.idle
        if not idle or not self._pending:
            return []
        out: list[Dispatch] = []
        pick = self.policy.pick
        fits = self._tokens.fits
        shed_late = self._shed_late
        while idle and self._pending:
            head = pick(now, self)
            if head is None:
                break
            if shed_late and head.dispatch is None and self._late(head, now):
                self._shed_job(head, now, queued=True)
                continue
            picks = self._plan(head, now)
            samples = 0
            for _, count in picks:
                samples += count
            tokens = token_cost(self._bases[head.workload], samples, head.precision)
            if not fits(tokens):
                break  # strict head of line: see the module docstring
            out.append(self._commit(head, picks, tokens, now))
        return out

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time after `now` at which `poll` may start something new
        without a submit or completion (a batching window ending); None if none."""
        if not self._lanes.idle or not self._pending:
            return None
        return self._mb.next_expiry(now)

    def complete(self, dispatch: Dispatch, now: float) -> list[Job]:
        """`dispatch` finished at `now`: its lane and tokens come back.

        Returns the jobs now fully done (every part finished), with end=now and
        outcome "ok". Parts of cancelled or failed jobs are ignored.
        """
        self._release(dispatch, now)
        done: list[Job] = []
        for part in dispatch.parts:
            job = part.job
            job.parts_in_flight -= 1
            if job.outcome is None and not job.remaining and not job.parts_in_flight:
                job.end = now
                job.outcome = "ok"
                del self._jobs[job.id]
                done.append(job)
        return done

    def fail(self, dispatch: Dispatch, now: float, reason: str) -> list[Job]:
        """`dispatch` failed at `now` (e.g. its worker crashed).

        Its lane and tokens come back; every job in it not yet finished gets
        outcome "error" with `error=reason`, loses its queued parts, and is
        returned exactly once. Its other in-flight parts are ignored when they end.
        """
        self._release(dispatch, now)
        failed: list[Job] = []
        for part in dispatch.parts:
            job = part.job
            job.parts_in_flight -= 1
            if job.outcome is None:
                self._finish(job, now, "error", reason)
                failed.append(job)
        return failed

    def cancel(self, job_id: int, now: float) -> Job | None:
        """The client of job `job_id` went away: drop what is still queued.

        Returns the job with outcome "cancelled" and end=now, or None if the
        job is unknown or already finished. Parts already running cannot be
        stopped; they run out, hold their lane and tokens until completed,
        and their completion is not reported.
        """
        job = self._jobs.get(job_id)
        if job is None:
            return None
        self._finish(job, now, "cancelled", "cancelled by client")
        return job

    def take_shed(self) -> list[Job]:
        """Jobs shed since the last call (outcome "shed", end = when shed)."""
        shed, self._shed = self._shed, []
        return shed

    def refresh_predictions(self) -> None:
        """Forget memoised service-time predictions (the model was updated)."""
        if isinstance(self.service_model, CachedServiceTime):
            self.service_model.clear()
        # Budget-derived caps depend on the predictions: relearn them.
        for key in list(self._solo_caps):
            self._learn_group(key)

    # ------------------------------------------------------- read-only views

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
        """Tokens held by running dispatches."""
        return self._tokens.in_use

    @property
    def token_capacity(self) -> int:
        """Tokens in the pool."""
        return self._tokens.capacity

    @property
    def busy_lanes(self) -> int:
        """Lanes running a dispatch."""
        return self._lanes.busy

    @property
    def lanes(self) -> int:
        """Lanes in the pool."""
        return self._lanes.size

    # --------------------------------------------- QueueView, for policies

    def ready(self, job: Job, now: float) -> bool:
        """Whether `job` may lead a dispatch now (not held by its batching window)."""
        mb = self._mb
        if job.job_class not in mb.classes or now >= job.enqueue + mb.window:
            return True
        key = (job.workload, job.backend, job.precision)
        return mb.samples[key] >= self._batch_caps[key]

    def batchable(self, job: Job) -> bool:
        """Whether `job`'s class may be merged with others."""
        return job.job_class in self._mb.classes

    def dispatch_cap(self, job: Job) -> int:
        """Most samples a dispatch led by `job` may carry."""
        key = (job.workload, job.backend, job.precision)
        if job.job_class in self._mb.classes:
            return self._batch_caps[key]
        return self._solo_caps[key]

    def batch_samples(self, job: Job) -> int:
        """Samples a dispatch led by `job` would carry now (whole group, capped)."""
        key = (job.workload, job.backend, job.precision)
        if job.job_class in self._mb.classes:
            return min(self._mb.samples[key], self._batch_caps[key])
        return min(job.remaining, self._solo_caps[key])

    def dispatch_tokens(self, job: Job, samples: int) -> int:
        """Tokens a dispatch of `samples` samples of `job`'s model holds."""
        return token_cost(self._bases[job.workload], samples, job.precision)

    # ---------------------------------------------------------------- phases

    def _learn_group(self, key: GroupKey) -> int:
        workload, _, precision = key
        base = self._bases.get(workload)
        if base is None:
            raise UnknownWorkload(workload, sorted(self._bases))
        fits = max_samples_within(base, precision, self._tokens.capacity)
        if fits:
            fits = min(fits, self._within_budget(key, max(self._split, self._batch_cap)))
        self._solo_caps[key] = min(self._split, fits)
        self._batch_caps[key] = min(self._batch_cap, fits)
        return self._solo_caps[key]

    def _within_budget(self, key: GroupKey, limit: int) -> int:
        """Most samples (1..limit) predicted to run within max_dispatch_ms; limit if no budget."""
        budget_ms = self.config.max_dispatch_ms
        if budget_ms is None or self.service_model is None:
            return limit
        budget = budget_ms / 1e3
        predict = self.service_model.predict
        lo, hi = 1, limit  # a single sample always runs, however slow: it cannot be split
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if predict(*key, mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _plan(self, head: Job, now: float) -> list[tuple[Job, int]]:
        """The head's next part plus, if batchable, whole companions that fit."""
        key = (head.workload, head.backend, head.precision)
        if head.job_class not in self._mb.classes:
            return [(head, min(head.remaining, self._solo_caps[key]))]
        cap = self._batch_caps[key]
        take = min(head.remaining, cap)
        picks = [(head, take)]
        room = cap - take
        members = self._mb.members[key]
        if not room or len(members) < 2:
            return picks
        others = [job for job in members if job is not head]
        if len(others) > 1:
            others = self.policy.order(others, now, self)
        shed_late = self._shed_late
        model = self.service_model
        samples = take
        # Deadline guard: the earliest deadline of a job that ends in this dispatch
        # and makes it as planned so far. A companion joins only if the grown
        # dispatch still ends before it (a split job's part is not its end).
        tightest = float("inf")
        if (
            model is not None
            and take == head.remaining
            and now + model.predict(*key, take) <= head.deadline
        ):
            tightest = head.deadline
        for job in others:
            count = job.remaining
            if count > room:
                continue  # first fit: a smaller later companion may still fit
            if shed_late and job.dispatch is None and self._late(job, now):
                self._shed_job(job, now, queued=True)
                continue
            if model is not None:
                end = now + model.predict(*key, samples + count)
                if end > tightest:
                    continue  # it would make a member late; a smaller one may still fit
                if end <= job.deadline < tightest:
                    tightest = job.deadline
            picks.append((job, count))
            samples += count
            room -= count
            if not room:
                break
        return picks

    def _commit(self, head: Job, picks: list[tuple[Job, int]], tokens: int, now: float) -> Dispatch:
        """Take the planned samples off the queue and hand out a lane and tokens."""
        lane = self._lanes.acquire()
        did = self._next_dispatch_id
        self._next_dispatch_id = did + 1
        key = (head.workload, head.backend, head.precision)
        mb = self._mb
        parts: list[Part] = []
        for job, count in picks:
            parts.append(Part(job, job.samples - job.remaining, count))
            if job.job_class in mb.classes:
                mb.took(key, job, count)
            job.remaining -= count
            job.parts_in_flight += 1
            if job.dispatch is None:
                job.dispatch = job.start = now
            job.lane = lane
            job.microbatch_id = did
            if not job.remaining:
                self._pending -= 1
                self._queued[job.job_class] -= 1
                self.policy.discard(job)
        dispatch = Dispatch(
            did, lane, head.workload, head.backend, head.precision, parts, tokens, now
        )
        self._tokens.take(tokens)
        self._running[did] = dispatch
        return dispatch

    def _release(self, dispatch: Dispatch, now: float) -> None:
        if self._running.pop(dispatch.id, None) is not dispatch:
            raise ValueError(f"dispatch {dispatch.id} is not running (completed twice?)")
        self._lanes.release(dispatch.lane, now)
        self._tokens.give(dispatch.tokens)

    def _dequeue(self, job: Job) -> None:
        """Drop the job's queued samples (it will not run them)."""
        if not job.remaining:
            return
        if job.job_class in self._mb.classes:
            self._mb.drop((job.workload, job.backend, job.precision), job)
        job.remaining = 0
        self._pending -= 1
        self._queued[job.job_class] -= 1
        self.policy.discard(job)

    def _finish(self, job: Job, now: float, outcome: Outcome, reason: str) -> None:
        """End a job without success: it leaves the queue and the registry."""
        self._dequeue(job)
        job.outcome = outcome
        job.end = now
        job.error = reason
        self._jobs.pop(job.id, None)

    def _late(self, job: Job, now: float) -> bool:
        """Whether even its next part, started now, would end after the deadline.

        Optimistic on purpose (one part, the mean prediction): shedding must only
        drop jobs that are certainly lost.
        """
        model = self.service_model
        if model is None:
            return now > job.deadline
        samples = min(job.remaining, self.dispatch_cap(job))
        return now + model.predict(job.workload, job.backend, job.precision, samples) > job.deadline

    def _shed_job(self, job: Job, now: float, *, queued: bool) -> None:
        if queued:
            self._finish(job, now, "shed", SHED_REASON)
        else:
            job.outcome = "shed"
            job.end = now
            job.error = SHED_REASON
        self._shed.append(job)
