"""The scheduling core: a pure, synchronous state machine driven by its caller.

    submit(job, now)      a job enters the queue (or is refused: it would be late)
    poll(now)             dispatches to start now (lane, parts, tokens)
    next_wakeup(now)      when a batching window needs attention
    complete / fail       a lane finished; its lane and tokens come back
    cancel(job_id, now)   the client went away

The live gateway and the simulator drive the same object; only the executor
differs. `now` is always an argument: nothing here reads a clock.
Lanes come in groups (`SchedulerConfig.groups()`); each class is run by one
group, which has its own policy instance, service-time model and dispatch
budget. Decisions, in order, each time a lane of a group is free:

1. The group's policy picks the best *ready* job (the head). A job of a class
   in `microbatch.classes` is held until its window (enqueue + window_ms) ends
   or its group holds a full batch; other jobs are ready at once.
2. The head's dispatch is formed: its next part (at most the cap), then, if it
   is batchable, whole compatible queued jobs of the same lane group in policy
   order while they fit (first fit). With a service model a companion also has
   to keep the dispatch's planned end before the tightest deadline among the
   jobs it finishes that would make theirs. Caps are cut to what the token
   capacity can ever hold, so every dispatch fits an idle device.
3. Deadlines cover execution: a dispatch whose predicted end is past the
   deadline of every job in it, all of classes that shed late work, is not
   started; its jobs are shed.
4. Head of line: if the dispatch's tokens do not fit the free tokens, nothing
   else starts in this poll. No job overtakes a blocked head, so nothing starves
   behind a bigger job and priority order is never broken by token pressure; the
   price is an idle lane until a completion frees tokens.

Admission (`submit`): a job of a class with `refuse_late` is refused
(PredictedLate) when its forecast finish (scheduling/admission.py) plus the
class's margin is past its deadline; the core computes the Retry-After too, so
the simulator and the gateway refuse the same jobs.

Service times: shedding and the dynamic score ask a group's model for its mean;
admission, the budget and step 2's guard for its planning quantile. Answers are
memoised per model version, compared as each call begins: a learner needs no flush.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduling.admission import Estimate, check_admission, chunk_times, forecast
from scheduling.config import ClassAdmission, SchedulerConfig
from scheduling.errors import NoLane, QueueFull
from scheduling.job import JOB_CLASSES, Dispatch, Job, Outcome, Part
from scheduling.lane_groups import LaneGroup, ServiceModels, model_for
from scheduling.membership import Membership
from scheduling.microbatch import MicroBatcher
from scheduling.model_residency import ModelResidency
from scheduling.placement import Placement
from scheduling.policies import make_policy
from scheduling.residency import Residency
from scheduling.scheduler_counts import SchedulerCounts
from scheduling.tokens import TokenCost, TokenCosts

#: Reason recorded on a job dropped by deadline-aware shedding.
SHED_REASON = "cannot meet its deadline even if started now"


class Scheduler(SchedulerCounts, ModelResidency, Membership):
    """Queue, policies, micro-batcher, token pools and lanes behind a few calls."""

    def __init__(
        self,
        config: SchedulerConfig,
        token_bases: Mapping[str, int],
        service_model: ServiceModels = None,
        *,
        measured_costs: Mapping[tuple[str, str], TokenCost] | None = None,
    ) -> None:
        self.config = config
        #: Per model and precision, what a dispatch holds: `measured_costs` (from a
        #: profile, per (workload, precision)) over the hand-set table of `token_bases`.
        self.costs = TokenCosts(token_bases, measured_costs)
        groups = config.groups()
        self._groups = [
            LaneGroup(i, g, config, self.costs, model_for(service_model, g.name))
            for i, g in enumerate(groups)
        ]
        self._group_of_class = {c: self._groups[i] for i, g in enumerate(groups) for c in g.classes}
        for group in self._groups:
            # The policy sees its group's dispatch budget (its live lanes: group_lanes).
            view = config.model_copy(update={"max_dispatch_ms": group.config.max_dispatch_ms})
            group.policy = make_policy(config.policy, view, group.model)
        self._mb = MicroBatcher(config.microbatch)
        #: Lanes on nodes, tokens per node (scheduling/placement.py).
        self._place = Placement([g.count for g in groups], config.tokens.capacity)
        self._lanes = self._place.lanes
        #: Per lane, the (mean end, planning excess) of the dispatch it runs.
        self._lane_end: list[Estimate] = [(0.0, 0.0)] * self._lanes.size
        tokens = config.tokens
        #: Which models each lane holds under `tokens.lane_budget` (model_residency.py).
        self._residency = Residency(tokens.lane_budget, tokens.load_ms, tokens.load_ms_per_mib)
        #: Per group, dispatches whose lane was lost, waiting for their one retry.
        self._retries: list[list[tuple[Dispatch, str]]] = [[] for _ in groups]
        self._failed: list[Job] = []
        self._limits = dict(config.queue_limit or {})
        self._admission = {c: config.class_admission(c) for c in JOB_CLASSES}
        self._queued: dict[str, int] = dict.fromkeys(JOB_CLASSES, 0)
        self._pending = 0
        #: Admitted jobs without an outcome yet, by id (for cancel).
        self._jobs: dict[int, Job] = {}
        self._running: dict[int, Dispatch] = {}
        self._shed: list[Job] = []
        self._next_dispatch_id = 0
        #: Its driver's latency per hop, measured (live: the event loop's recent p95 lag):
        #: admission adds it before and after a job and to every dispatch's hand-off.
        self.hop_s = 0.0

    # ------------------------------------------------------------------ calls

    def submit(self, job: Job, now: float) -> None:
        """Admit `job` at `now` (sets `job.enqueue`).

        Raises UnknownWorkload, JobTooLarge (a one-sample dispatch can never fit
        the token capacity, or its model the lane budget), QueueFull (its class's
        queue_limit is reached) or PredictedLate (its class refuses late work and
        the forecast says it would be). A job of a class that sheds late work,
        already unable to meet its deadline, is shed at once: it is reported by
        `take_shed()`, not queued.
        """
        self._sync()
        key = (job.workload, job.backend, job.precision)
        group = self._group_of_class[job.job_class]
        solo_cap = group.solo_caps.get(key)
        if solo_cap is None:
            solo_cap = group.learn(key)
        if not solo_cap:
            raise self._too_large(job)
        if not self._lanes.counts[group.index]:
            raise NoLane(job.job_class, group.config.name)
        limit = self._limits.get(job.job_class)
        if limit is not None and self._queued[job.job_class] >= limit:
            raise QueueFull(job.job_class, limit)
        if job.id in self._jobs or job.outcome is not None or job.samples < 1:
            raise ValueError(f"job {job.id} cannot be submitted (duplicate, finished or empty)")
        job.enqueue = now
        job.remaining = job.samples
        rules = self._admission[job.job_class]
        if rules.refuse_late and group.model is not None:
            self._refuse_if_late(group, job, now, rules)
        if self._sheds(job) and self._late(job, now):
            self._shed_job(job, now, queued=False)
            return
        self._jobs[job.id] = job
        self._queued[job.job_class] += 1
        self._pending += 1
        group.policy.push(job)
        if job.job_class in self._mb.classes:
            self._mb.add(job, key, now)

    def poll(self, now: float) -> list[Dispatch]:
        """The dispatches to start at `now`; each holds a lane and tokens until it ends.

        Jobs of classes that shed late work are shed on the way when they (or the
        whole dispatch they would lead) can no longer make their deadline (see
        `take_shed`).
        """
        self._sync()
        out: list[Dispatch] = []
        lanes = self._lanes
        for group in self._groups:
            if self._retries[group.index] and not self._poll_retries(group, now, out):
                return out  # a retry blocked on tokens: strict head of line
            while lanes.idle[group.index] and self._pending:
                head = group.policy.pick(now, self)
                if head is None:
                    break
                if self._sheds(head) and head.start is None and self._late(head, now):
                    self._shed_job(head, now, queued=True)
                    continue
                picks = self._plan(group, head, now)
                if self._hopeless(group, picks, now):
                    for job, _ in picks:
                        self._shed_job(job, now, queued=True)
                    continue
                samples = sum(count for _, count in picks)
                tokens = self.costs.tokens(head.workload, samples, head.precision)
                key = (head.workload, head.backend, head.precision)
                if self._warm_soon(group, key, now):
                    break  # its model's lane frees before a cold one could load it
                lane = self._place.acquire(group.index, tokens, self._warm_on(key))
                if lane is None:
                    return out  # strict head of line, across groups: module docstring
                out.append(self._commit(group, head, picks, tokens, lane, now))
        return out

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time after `now` at which `poll` may start something new
        without a submit or completion (a batching window ending); None if none."""
        if not self._lanes.any_idle or not self._pending:
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
        return self._fail_parts(dispatch.parts, now, reason)

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

    # --------------------------------------------- QueueView, for policies

    def ready(self, job: Job, now: float) -> bool:
        """Whether `job` may lead a dispatch now (not held by its batching window)."""
        mb = self._mb
        if job.job_class not in mb.classes or now >= job.enqueue + mb.window:
            return True
        key = (job.workload, job.backend, job.precision)
        return mb.samples[key] >= self._group_of_class[job.job_class].batch_caps[key]

    def batchable(self, job: Job) -> bool:
        """Whether `job`'s class may be merged with others."""
        return job.job_class in self._mb.classes

    def dispatch_cap(self, job: Job) -> int:
        """Most samples a dispatch led by `job` may carry."""
        key = (job.workload, job.backend, job.precision)
        group = self._group_of_class[job.job_class]
        if job.job_class in self._mb.classes:
            return group.batch_caps[key]
        return group.solo_caps[key]

    def batch_samples(self, job: Job) -> int:
        """Samples a dispatch led by `job` would carry now (whole group, capped)."""
        key = (job.workload, job.backend, job.precision)
        group = self._group_of_class[job.job_class]
        if job.job_class in self._mb.classes:
            return min(self._mb.samples.get(key, 0) or job.remaining, group.batch_caps[key])
        return min(job.remaining, group.solo_caps[key])

    def dispatch_tokens(self, job: Job, samples: int) -> int:
        """Tokens a dispatch of `samples` samples of `job`'s model holds."""
        return self.costs.tokens(job.workload, samples, job.precision)

    # ---------------------------------------------------------------- phases

    def _sync(self) -> None:
        """Follow each group's service model to its current version (memos, caps)."""
        for group in self._groups:
            memo = group.model
            # The check inline (runs at every submit and poll); a change is rare.
            if memo is not None and memo.model.version != memo.seen:
                group.sync()

    def _refuse_if_late(
        self, group: LaneGroup, job: Job, now: float, rules: ClassAdmission
    ) -> None:
        """Forecast the job's finish; raise PredictedLate if it would miss its deadline."""
        key = (job.workload, job.backend, job.precision)
        batchable = job.job_class in self._mb.classes
        cap = group.batch_caps[key] if batchable else group.solo_caps[key]
        own = group.estimates(key, job.remaining, cap, self.hop_s)
        cold = self._cold_start_s(group, key)  # no lane holds its model: a load first
        own[0] = (own[0][0] + cold, own[0][1])
        load = group.load(
            group.note_arrival(now), sum(mean for mean, _ in own), self._lanes.counts[group.index]
        )
        # Light load: refusing only pays when another job takes the slot; refuse then
        # only what is late on average. Loaded: the class's quantile must meet it.
        scale = rules.excess_scale() if load >= rules.loaded else 0.0
        ends, lanes, hop = self._lane_end, self._lanes, self.hop_s
        lane_free = [
            (max(now, ends[lane][0]), ends[lane][1] * scale) if lanes.is_busy(lane) else (now, 0)
            for lane, g in enumerate(lanes.group_of)
            if g == group.index and lanes.is_live(lane)
        ]
        ahead: list[Estimate] = []
        for other in group.policy.ahead(job, now, self):
            k = (other.workload, other.backend, other.precision)
            ahead += group.estimates(k, other.remaining, self.dispatch_cap(other), hop, scale)
        own = [(mean, excess * scale) for mean, excess in own]
        plan = forecast(lane_free, ahead, own, now + self._mb.window if batchable else now)
        idle = not ahead and lanes.all_idle(group.index)
        margin = rules.margin_ms / 1e3 + 2 * hop
        # Idle lanes admit on the mean, and the hop (a p95 of loop lag) is no mean:
        # a lag spike must not refuse work that idle lanes would finish in time.
        alone = sum(mean for mean, _ in own) - hop * len(own)
        # Idle lanes that ran nothing for probe_s take the job whatever its forecast:
        # the model learns only from runs, and one inflated by a slow spell would
        # otherwise refuse the class for ever.
        probe = idle and now - group.last_end >= rules.probe_s
        check_admission(job, now, margin, plan, alone, idle, probe)

    def _plan(self, group: LaneGroup, head: Job, now: float) -> list[tuple[Job, int]]:
        """The head's next part plus, if batchable, whole companions that fit."""
        key = (head.workload, head.backend, head.precision)
        if head.job_class not in self._mb.classes:
            return [(head, min(head.remaining, group.solo_caps[key]))]
        cap = group.batch_caps[key]
        take = min(head.remaining, cap)
        picks = [(head, take)]
        room = cap - take
        members = self._mb.members[key]
        if not room or len(members) < 2:
            return picks
        others = [
            job
            for job in members
            if job is not head and self._group_of_class[job.job_class] is group
        ]
        if len(others) > 1:
            others = group.policy.order(others, now, self)
        model = group.model
        samples = take
        # Deadline guard: the earliest deadline of a job that ends in this dispatch
        # and makes it as planned so far. A companion joins only if the grown
        # dispatch still ends before it (a split job's part is not its end).
        tightest = float("inf")
        if (
            model is not None
            and take == head.remaining
            and now + model.plan(*key, take) <= (head.deadline)
        ):
            tightest = head.deadline
        for job in others:
            count = job.remaining
            if count > room:
                continue  # first fit: a smaller later companion may still fit
            if self._sheds(job) and job.start is None and self._late(job, now):
                self._shed_job(job, now, queued=True)
                continue
            if model is not None:
                end = now + model.plan(*key, samples + count)
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

    def _hopeless(self, group: LaneGroup, picks: list[tuple[Job, int]], now: float) -> bool:
        """Whether the planned dispatch should not start: by its predicted (mean) end
        every job in it is late, and each is unstarted and of a class shedding late work."""
        model = group.model
        if model is None:
            return False
        for job, _ in picks:
            if job.start is not None or not self._sheds(job):
                return False
        head = picks[0][0]
        samples = sum(count for _, count in picks)
        end = now + model.predict(head.workload, head.backend, head.precision, samples)
        return all(end > job.deadline for job, _ in picks)

    def _commit(
        self,
        group: LaneGroup,
        head: Job,
        picks: list[tuple[Job, int]],
        tokens: int,
        lane: int,
        now: float,
    ) -> Dispatch:
        """Take the planned samples off the queue onto `lane` (its tokens taken)."""
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
            if job.start is None:
                job.start = now
            job.lane = lane
            job.microbatch_id = did
            if not job.remaining:
                self._pending -= 1
                self._queued[job.job_class] -= 1
                group.policy.discard(job)
        dispatch = Dispatch(
            did, lane, head.workload, head.backend, head.precision, parts, tokens, now, group.index
        )
        self._swap_in(dispatch, now)
        self._note_lane_end(group, dispatch, now)
        self._running[did] = dispatch
        return dispatch

    def _note_lane_end(self, group: LaneGroup, dispatch: Dispatch, now: float) -> None:
        """Predict when `dispatch` frees its lane (what admission forecasts from)."""
        model = group.model
        if model is not None:
            key, samples = (
                (dispatch.workload, dispatch.backend, dispatch.precision),
                dispatch.samples,
            )
            mean = model.predict(*key, samples)
            load = dispatch.swap.load_s if dispatch.swap is not None else 0.0
            excess = max(0.0, model.plan(*key, samples) - mean)
            self._lane_end[dispatch.lane] = (now + load + mean, excess)

    def _release(self, dispatch: Dispatch, now: float) -> None:
        if self._running.pop(dispatch.id, None) is not dispatch:
            raise ValueError(f"dispatch {dispatch.id} is not running (completed twice?)")
        self._place.release(dispatch.lane, dispatch.tokens, now)
        self._groups[self._lanes.group_of[dispatch.lane]].last_end = now

    def _dequeue(self, job: Job) -> None:
        """Drop the job's queued samples (it will not run them)."""
        if not job.remaining:
            return
        if job.job_class in self._mb.classes:
            self._mb.drop((job.workload, job.backend, job.precision), job)
        job.remaining = 0
        self._pending -= 1
        self._queued[job.job_class] -= 1
        self._group_of_class[job.job_class].policy.discard(job)

    def _finish(self, job: Job, now: float, outcome: Outcome, reason: str) -> None:
        """End a job without success: it leaves the queue and the registry."""
        self._dequeue(job)
        job.outcome = outcome
        job.end = now
        job.error = reason
        self._jobs.pop(job.id, None)

    def _sheds(self, job: Job) -> bool:
        return self._admission[job.job_class].shed_late and not job.probe

    def _late(self, job: Job, now: float) -> bool:
        """Whether even its next part, started now, would end after the deadline.

        Optimistic on purpose (one part, the mean prediction): shedding must only
        drop jobs that are certainly lost.
        """
        model = self._group_of_class[job.job_class].model
        if model is None:
            return now > job.deadline
        samples = min(job.remaining, self.dispatch_cap(job))
        return now + model.predict(job.workload, job.backend, job.precision, samples) > job.deadline

    def _shed_job(self, job: Job, now: float, *, queued: bool) -> None:
        model = self._group_of_class[job.job_class].model
        if model is not None and job.remaining:
            cap = self.dispatch_cap(job)
            key = (job.workload, job.backend, job.precision)
            job.saved_s = sum(chunk_times(job.remaining, cap, lambda n: model.predict(*key, n)))
        if queued:
            self._finish(job, now, "shed", SHED_REASON)
        else:
            job.outcome = "shed"
            job.end = now
            job.error = SHED_REASON
        self._shed.append(job)
