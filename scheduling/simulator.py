"""Discrete-event simulation of the gateway on a virtual clock.

Only the executor is swapped: the same `Scheduler` decides, and a lane "runs"
a dispatch for the service model's prediction of its size, optionally times a
seeded lognormal jitter. The loop jumps from event to event (next arrival,
next completion, next batching-window end), so a million jobs take seconds and
the result is identical for a given seed. The lanes may be spread over a
simulated cluster of nodes (scheduling/sim_cluster.py), still under one scheduler.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduling.config import SchedulerConfig
from scheduling.cpu_share import Executor
from scheduling.errors import JobTooLarge, PredictedLate, QueueFull
from scheduling.job import Dispatch, Job, JobClass
from scheduling.lane_groups import ServiceModels, model_for
from scheduling.residency import SwapCounts
from scheduling.scheduler import Scheduler
from scheduling.service_time import ServiceTimeModel
from scheduling.sim_cluster import ONE_MACHINE, Topology, cluster_executor, place_lanes
from scheduling.tokens import TokenCost


@dataclass(frozen=True)
class Arrival:
    """One request to simulate."""

    #: Arrival time, seconds on the virtual clock.
    time: float
    workload: str
    backend: str
    precision: str
    job_class: JobClass
    #: Samples in the request.
    samples: int
    #: Latency budget, seconds: the job's deadline is time + slo.
    slo: float


@dataclass
class SimResult:
    """What a simulation produced."""

    #: Every job with its timestamps and outcome, in id order (ids follow arrival order).
    jobs: list[Job]
    #: Dispatches started.
    dispatches: int
    #: Virtual time of the last event.
    sim_time: float
    #: Model loads and evictions under a lane budget, and the seconds lanes spent loading.
    swaps: SwapCounts = field(default_factory=SwapCounts)

    def outcomes(self) -> dict[str, int]:
        """Jobs per outcome."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            key = job.outcome or "unfinished"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def slo_attainment(self, job_class: JobClass | None = None) -> float:
        """Fraction of jobs (of a class, or all) that ended ok within their deadline."""
        jobs = [j for j in self.jobs if job_class is None or j.job_class == job_class]
        if not jobs:
            return math.nan
        return sum(1 for j in jobs if j.slo_met) / len(jobs)


def make_jobs(arrivals: Sequence[Arrival]) -> list[Job]:
    """Jobs for `arrivals`, ids 0.. in time order (stable for equal times)."""
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i].time)
    jobs: list[Job] = []
    for job_id, i in enumerate(order):
        a = arrivals[i]
        job = Job(
            job_id,
            a.workload,
            a.backend,
            a.precision,
            a.job_class,
            a.samples,
            a.time,
            a.time + a.slo,
        )
        jobs.append(job)
    return jobs


def simulate(
    config: SchedulerConfig,
    arrivals: Sequence[Arrival],
    service_model: ServiceModels,
    token_bases: Mapping[str, int],
    *,
    jitter: float = 0.0,
    seed: int = 0,
    policy_model: ServiceModels = None,
    cores: float | None = None,
    request_cpu_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    topology: Topology = ONE_MACHINE,
    scheduler_class: type[Scheduler] = Scheduler,
    measured_costs: Mapping[tuple[str, str], TokenCost] | None = None,
) -> SimResult:
    """Run `arrivals` through a fresh Scheduler on a virtual clock.

    A dispatch of n samples needs service_model.predict(..., n) seconds (the
    model of its lane group, if a mapping by group name is given), times a
    lognormal factor with sigma `jitter` and mean 1 (seeded by `seed`), plus its
    swap's load time under a lane budget (`tokens.lane_budget`: each lane starts
    with the models that fit, in order of first arrival). With
    `cores`, lanes share that many CPUs by their group's threads and priority
    (`scheduling.cpu_share.SharedCores`), and each arrival also costs
    `request_cpu_s` of normal-priority CPU outside the lanes (the gateway's
    event loop reading and answering it); without, each lane has its own.
    At equal times completions are handled before arrivals, then the scheduler
    is polled. A job refused at admission (QueueFull, JobTooLarge, PredictedLate)
    ends "rejected" at its arrival; an unknown workload is a config error.

    `policy_model` is what the scheduler *believes* (policies, shedding), e.g. a
    learned predictor; `service_model` stays the truth (the default belief).
    `progress` hears (arrivals submitted, total) about every 1 % of the arrivals.
    `topology` makes it a cluster (scheduling/sim_cluster.py): every lane group's
    lanes on each of `topology.nodes` nodes, one scheduler over all of them, token
    capacity and `cores` per node, the event loop's CPU on node-0, and every
    dispatch `topology.network_s` longer (the hop to its node and back). One node
    without network is the single machine, event for event. `scheduler_class` is
    the scheduler to build, e.g. a subclass that times its calls; `measured_costs`
    its profiled token costs over the table of `token_bases` (scheduling/tokens.py).
    """
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    belief = service_model if policy_model is None else policy_model
    sched = scheduler_class(config, token_bases, belief, measured_costs=measured_costs)
    layout = place_lanes(sched, config.groups(), topology.nodes)
    jobs = make_jobs(arrivals)
    _preload(sched, jobs)
    rng = random.Random(seed)
    samplers = [
        _service_sampler(model_for(service_model, g.name), jitter, rng) for g in config.groups()
    ]

    def service(d: Dispatch) -> float:  # a swap's load first, as long as predicted
        return samplers[d.group](d) + (d.swap.load_s if d.swap is not None else 0.0)

    executor = cluster_executor(layout, topology, cores)
    dispatches, end = _run(sched, jobs, service, executor, request_cpu_s, progress)
    return SimResult(jobs=jobs, dispatches=dispatches, sim_time=end, swaps=sched.swaps)


def _preload(sched: Scheduler, jobs: Sequence[Job]) -> None:
    """Under a lane budget, each lane starts holding the models it fits, in the order
    they first arrive (the gateway loads its configured models in order)."""
    if sched.lane_budget is None:
        return
    keys = list(dict.fromkeys((j.workload, j.backend, j.precision) for j in jobs))
    for lane in sched.live_lanes():
        sched.preload(lane, keys, 0.0)


def _service_sampler(
    model: ServiceTimeModel | None, jitter: float, rng: random.Random
) -> Callable[[Dispatch], float]:
    """A function Dispatch -> service seconds, memoising the model per shape."""
    if model is None:
        raise ValueError("the simulator needs a service-time model for every lane group")
    memo: dict[tuple[str, str, str, int], float] = {}
    lognorm = rng.lognormvariate
    mu = -0.5 * jitter * jitter  # mean-one factor: the model predicts the mean

    def service(d: Dispatch) -> float:
        n = 0
        for part in d.parts:
            n += part.count
        key = (d.workload, d.backend, d.precision, n)
        t = memo.get(key)
        if t is None:
            t = memo[key] = model.predict(d.workload, d.backend, d.precision, n)
        return t * lognorm(mu, jitter) if jitter else t

    return service


def _run(
    sched: Scheduler,
    jobs: list[Job],
    service: Callable[[Dispatch], float],
    executor: Executor,
    request_cpu_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, float]:
    """The event loop; returns (dispatches started, time of the last event)."""
    inf = math.inf
    submit, poll, complete = sched.submit, sched.poll, sched.complete
    next_wakeup, take_shed = sched.next_wakeup, sched.take_shed
    start, next_end, finished = executor.start, executor.next_end, executor.finished
    refused = (QueueFull, JobTooLarge, PredictedLate)
    seq = 0
    n = len(jobs)
    i = 0
    every = max(1, n // 100)
    next_arrival = jobs[0].arrival if n else inf
    wake: float | None = None
    now = last = 0.0
    while True:
        now = min(next_arrival, next_end())
        if wake is not None and wake < now:
            now = wake
        if now == inf:
            break
        last = now
        for d in finished(now):
            complete(d, now)
        while next_arrival <= now:
            job = jobs[i]
            try:
                submit(job, now)
            except refused as exc:
                job.outcome, job.end, job.error = "rejected", now, str(exc)
            if request_cpu_s:
                executor.overhead(request_cpu_s, now)
            i += 1
            next_arrival = jobs[i].arrival if i < n else inf
            if progress is not None and i % every == 0:
                progress(i, n)
        for d in poll(now):
            start(d, service(d), now)
            seq += 1
        take_shed()  # outcomes are already on the jobs; just keep the list short
        wake = next_wakeup(now)
    return seq, last
