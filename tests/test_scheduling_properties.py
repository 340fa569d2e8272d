"""Property tests: invariants of the scheduler over random job streams and configs.

A test-side event loop (fake clock, never sleeping) drives the real Scheduler,
injects cancellations and lane failures, and checks after every poll:

- tokens in use equal the running dispatches' tokens and never exceed capacity;
- no lane runs two dispatches at once;
- a dispatch merges only compatible jobs of batchable classes, never exceeds
  its cap, and its tokens are token_cost of its samples;
- every job is reported exactly once, with arrival <= start <= end;
- fifo leads each dispatch with the oldest ready job, priority_slo with the
  best (class, deadline) ready job, so no batch job starts while a ready
  interactive one waits;
- nothing ready is left waiting on an idle lane of its group unless tokens are held;
- with lane groups, a dispatch runs on a lane of its lead's class's group;
- admission: a refused job (PredictedLate) is never queued and carries a drain >= 0.

Readiness is recomputed here from the config (an oracle), not asked of the
scheduler.
"""

from __future__ import annotations

import random
from collections import Counter
from heapq import heappop, heappush

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduling.config import SchedulerConfig
from scheduling.errors import JobTooLarge, PredictedLate
from scheduling.job import Dispatch, Job
from scheduling.scheduler import Scheduler
from scheduling.tokens import max_samples_within, table_cost, token_cost
from tests.factories import SERVICE, TOKEN_BASES, make_config

RANK = {"interactive": 0, "batch": 1}
ORDER_KEYS = {
    "fifo": lambda j: (j.arrival, j.id),
    "priority_slo": lambda j: (RANK[j.job_class], j.deadline, j.arrival, j.id),
}

GROUPS = [
    None,
    [
        {"name": "interactive", "count": 1, "classes": ["interactive"]},
        {"name": "batch", "count": 2, "classes": ["batch"], "priority": "low"},
    ],
    [
        {"name": "batch", "count": 1, "classes": ["batch"]},
        {"name": "interactive", "count": 2, "classes": ["interactive"]},
    ],
]
ADMISSION = [
    None,  # make_config's default: everything off, or shed_late for every class
    {"interactive": {"refuse_late": True, "shed_late": True, "margin_ms": 1.0}},
    {
        "interactive": {"refuse_late": True},
        "batch": {"refuse_late": True, "shed_late": True},
    },
]


def _config(lane_groups: list | None, lanes: int, **knobs: object) -> SchedulerConfig:
    if lane_groups is not None:
        return make_config(lane_groups=lane_groups, **knobs)  # type: ignore[arg-type]
    return make_config(lanes=lanes, **knobs)  # type: ignore[arg-type]


def sheds(config: SchedulerConfig) -> bool:
    """Whether the config may shed or refuse jobs (orders and outcomes then differ)."""
    return any(r.shed_late or r.refuse_late for r in config.admission.values())


configs = st.builds(
    _config,
    lane_groups=st.sampled_from(GROUPS),
    admission=st.sampled_from(ADMISSION),
    policy=st.sampled_from(["fifo", "priority_slo", "batch_aware", "dynamic"]),
    lanes=st.integers(1, 4),
    capacity=st.sampled_from([200, 300, 600, 1000]),
    microbatch=st.booleans(),
    window_ms=st.sampled_from([0.0, 2.0, 10.0]),
    max_batch=st.integers(1, 64),
    batch_classes=st.sampled_from([("batch",), ("interactive", "batch"), ("interactive",)]),
    split=st.sampled_from([None, 1, 4, 8, 32]),
    shed_late=st.booleans(),
)

job_rows = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0005, 0.002, 0.01, 0.03]),  # gap to the previous arrival
        st.sampled_from(["resnet18", "resnet50", "vit_b_16", "tiny"]),
        st.sampled_from(["fp32", "fp16"]),
        st.sampled_from(["interactive", "batch"]),
        st.integers(1, 40),
        st.sampled_from([0.02, 0.1, 1.0]),  # SLO
    ),
    min_size=1,
    max_size=40,
)


def build_jobs(rows: list[tuple]) -> list[Job]:
    jobs, t = [], 0.0
    for i, (gap, workload, precision, job_class, samples, slo) in enumerate(rows):
        t += gap
        jobs.append(Job(i, workload, "pytorch", precision, job_class, samples, t, t + slo))
    return jobs


class Checker:
    """Drives one Scheduler over `jobs` and asserts the invariants as it goes."""

    def __init__(self, config: SchedulerConfig, jobs: list[Job], rnd: random.Random | None):
        self.config = config
        self.sched = Scheduler(config, TOKEN_BASES, SERVICE)
        self.jobs = jobs
        self.rnd = rnd  # None: no cancellations or failures
        self.mb = config.microbatch
        self.window = self.mb.window_ms / 1e3
        self.running: dict[int, Dispatch] = {}
        self.lane_of: dict[int, int] = {}  # lane -> running dispatch id
        self.reported: Counter[int] = Counter()
        self.parts: dict[int, list[tuple[int, int]]] = {}
        self.first_dispatch_order: list[int] = []
        self.submitted: list[Job] = []

    # ---------------------------------------------------------------- oracle

    def batchable(self, job: Job) -> bool:
        return self.mb.enabled and job.job_class in self.mb.classes

    def cap(self, job: Job, batchable: bool) -> int:
        capacity = self.config.tokens.capacity
        fits = max_samples_within(
            table_cost(TOKEN_BASES[job.workload], job.precision), capacity, capacity
        )
        split = self.config.max_dispatch_samples or 10**9
        return min(fits, self.config.batch_cap() if batchable else split)

    def ready(self, job: Job, now: float, left: dict[int, int]) -> bool:
        if not self.batchable(job) or now >= job.enqueue + self.window:  # type: ignore[operator]
            return True
        group = sum(
            left[j.id] for j in self.queued(left) if self.batchable(j) and j.compatible(job)
        )
        return group >= self.cap(job, True)

    def queued(self, left: dict[int, int]) -> list[Job]:
        return [j for j in self.submitted if left.get(j.id, 0) > 0]

    # ----------------------------------------------------------------- loop

    def run(self) -> None:
        events: list[tuple[float, int, int, object]] = []  # (time, kind, seq, payload)
        seq = 0
        for job in self.jobs:
            heappush(events, (job.arrival, 2, job.id, job))
            if self.rnd and self.rnd.random() < 0.1:
                heappush(
                    events, (job.arrival + self.rnd.choice([0.0, 0.005, 0.05]), 1, job.id, job)
                )
        wake = None
        while events or wake is not None:
            now = min(
                events[0][0] if events else float("inf"), wake if wake is not None else float("inf")
            )
            while events and events[0][0] <= now:
                _, kind, _, payload = heappop(events)
                if kind == 0:
                    self.finish(payload, now)  # type: ignore[arg-type]
                elif kind == 1:
                    self.cancel(payload, now)  # type: ignore[arg-type]
                else:
                    self.submit(payload, now)  # type: ignore[arg-type]
            before = {j.id: j.remaining for j in self.submitted if j.remaining and not j.done}
            started = self.sched.poll(now)
            self.check_poll(now, started, before)
            for d in started:
                end = now + SERVICE.predict(d.workload, d.backend, d.precision, d.samples)
                seq += 1
                heappush(events, (end, 0, seq, d))
            for job in self.sched.take_shed():
                self.report(job, "shed", now)
            wake = self.sched.next_wakeup(now)
            assert wake is None or wake > now
        self.check_end()

    def submit(self, job: Job, now: float) -> None:
        try:
            self.sched.submit(job, now)
        except PredictedLate as exc:
            assert self.config.class_admission(job.job_class).refuse_late
            assert exc.retry_after >= 0 and exc.predicted_finish > job.deadline - 0.0011
            job.outcome = "rejected"
            return
        except JobTooLarge:
            cost = token_cost(TOKEN_BASES[job.workload], 1, job.precision)
            assert cost > self.config.tokens.capacity
            job.outcome = "rejected"
            return
        self.submitted.append(job)

    def cancel(self, job: Job, now: float) -> None:
        got = self.sched.cancel(job.id, now)
        if got is not None:
            assert got is job
            self.report(job, "cancelled", now)

    def finish(self, d: Dispatch, now: float) -> None:
        assert self.lane_of.pop(d.lane) == d.id
        del self.running[d.id]
        if self.rnd and self.rnd.random() < 0.1:
            for job in self.sched.fail(d, now, "crash"):
                self.report(job, "error", now)
        else:
            for job in self.sched.complete(d, now):
                self.report(job, "ok", now)
        assert self.sched.tokens_in_use == sum(x.tokens for x in self.running.values())

    def report(self, job: Job, outcome: str, now: float) -> None:
        self.reported[job.id] += 1
        assert self.reported[job.id] == 1, f"job {job.id} reported twice"
        assert job.outcome == outcome and job.end == now
        assert job.arrival <= job.enqueue <= job.end  # type: ignore[operator]
        if job.start is not None:
            assert job.enqueue <= job.start <= job.end  # type: ignore[operator]
        if outcome == "ok":
            offsets = self.parts[job.id]
            assert [o for o, _ in offsets] == [
                sum(c for _, c in offsets[:k]) for k in range(len(offsets))
            ]
            assert sum(c for _, c in offsets) == job.samples

    # --------------------------------------------------------------- checks

    def check_poll(self, now: float, started: list[Dispatch], before: dict[int, int]) -> None:
        left = dict(before)
        policy = self.config.policy
        for d in started:
            self.check_dispatch(d, now)
            lead = d.parts[0].job
            group = self.sched.lane_group(d.lane)
            assert lead.job_class in group.classes, "a dispatch on another class's lanes"
            if policy in ORDER_KEYS and not sheds(self.config):
                ready = [
                    j
                    for j in self.queued(left)
                    if self.ready(j, now, left) and j.job_class in group.classes
                ]
                assert lead is min(ready, key=ORDER_KEYS[policy]), (policy, lead.id)
                if policy == "priority_slo" and lead.job_class == "batch":
                    assert not [j for j in ready if j.job_class == "interactive"]
            for p in d.parts:
                if p.job.id in left:
                    left[p.job.id] -= p.count
        cap = self.config.tokens.capacity
        assert self.sched.tokens_in_use == sum(x.tokens for x in self.running.values()) <= cap
        assert self.sched.busy_lanes == len(self.running) == self.sched.in_flight
        idle = {
            c
            for lane in range(self.config.lanes)
            if lane not in self.lane_of
            for c in self.sched.lane_group(lane).classes
        }
        after = {j.id: j.remaining for j in self.submitted if j.remaining and not j.done}
        if any(j.job_class in idle and self.ready(j, now, after) for j in self.queued(after)):
            assert self.running, "a ready job waits on an idle lane with free tokens"

    def check_dispatch(self, d: Dispatch, now: float) -> None:
        assert d.lane not in self.lane_of, f"lane {d.lane} runs two dispatches"
        assert 0 <= d.lane < self.config.lanes and d.start == now
        self.lane_of[d.lane] = d.id
        self.running[d.id] = d
        jobs = d.jobs
        assert len({j.id for j in jobs}) == len(jobs)
        assert all(
            (j.workload, j.backend, j.precision) == (d.workload, d.backend, d.precision)
            for j in jobs
        )
        assert d.tokens == token_cost(TOKEN_BASES[d.workload], d.samples, d.precision)
        lead = jobs[0]
        if len(jobs) > 1:
            assert all(self.batchable(j) for j in jobs)
        assert d.samples <= self.cap(lead, self.batchable(lead))
        for p in d.parts:
            assert p.count >= 1 and not p.job.done
            self.parts.setdefault(p.job.id, []).append((p.offset, p.count))
            if p.job.id not in self.first_dispatch_order:
                self.first_dispatch_order.append(p.job.id)

    def check_end(self) -> None:
        assert not self.running and self.sched.pending == 0 and self.sched.tokens_in_use == 0
        for job in self.submitted:
            assert self.reported[job.id] == 1, f"job {job.id} never reported"
        if self.rnd is None and not sheds(self.config):
            assert all(j.outcome == "ok" for j in self.submitted)


@settings(max_examples=200, deadline=None)
@given(config=configs, rows=job_rows, seed=st.integers(0, 2**16))
def test_invariants_with_cancellations_failures_and_shedding(config, rows, seed) -> None:
    Checker(config, build_jobs(rows), random.Random(seed)).run()


@settings(max_examples=150, deadline=None)
@given(config=configs, rows=job_rows, policy=st.sampled_from(["fifo", "priority_slo"]))
def test_order_of_fifo_and_priority_slo(config, rows, policy) -> None:
    config = config.model_copy(update={"policy": policy, "admission": {}})
    Checker(config, build_jobs(rows), None).run()


@settings(max_examples=100, deadline=None)
@given(config=configs, rows=job_rows)
def test_fifo_without_micro_batching_dispatches_in_arrival_order(config, rows) -> None:
    off = config.microbatch.model_copy(update={"enabled": False})
    update = {"policy": "fifo", "admission": {}, "microbatch": off, "lane_groups": None}
    config = config.model_copy(update={**update, "lanes": config.lanes})
    checker = Checker(config, build_jobs(rows), None)
    checker.run()
    assert checker.first_dispatch_order == [
        j.id for j in sorted(checker.submitted, key=lambda j: (j.arrival, j.id))
    ]
