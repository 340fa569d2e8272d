"""Measurements behind bench_slo_promise.py: open-loop sends, closed-loop capacity,
raw service times, the simulated twin, and the figures computed from each.

Every latency is measured from the request's *scheduled* send time (open loop):
a slow answer never delays the next send. The client is `LeanHttp` (a tenth of
httpx's CPU per request): on two cores the load generator's own CPU would
otherwise be charged to the server under test.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.common import _TRANSPORT_ERRORS, LeanHttp
from loadgen.client import request_body
from scheduling.config import SchedulerConfig
from scheduling.job import Job
from scheduling.service_time import FixedServiceTime
from scheduling.simulator import Arrival, simulate
from workloads.specs import RESNET18

WORKLOAD = RESNET18.name
SLO_S = {"interactive": 0.100, "batch": 1.000}


@dataclass
class Sent:
    """One request as the client saw it."""

    arrival: Arrival
    #: HTTP status, or None: no answer (transport error or client timeout).
    status: int | None
    #: Scheduled send time to the end of the answer, seconds.
    latency: float

    @property
    def in_slo(self) -> bool:
        return self.status == 200 and self.latency <= self.arrival.slo


def arrivals_at(
    rate: float, duration_s: float, seed: int, interactive_share: float, batch_samples: int
) -> list[Arrival]:
    """Poisson arrivals: `interactive_share` batch-1 interactive, the rest batch jobs."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration_s)
    times = np.sort(rng.uniform(0.0, duration_s, n))
    interactive = rng.random(n) < interactive_share
    return [
        Arrival(
            float(t),
            WORKLOAD,
            "onnx",
            "fp32",
            "interactive" if i else "batch",
            1 if i else batch_samples,
            SLO_S["interactive" if i else "batch"],
        )
        for t, i in zip(times, interactive, strict=True)
    ]


def send_open_loop(base_url: str, arrivals: Sequence[Arrival], timeout_s: float) -> list[Sent]:
    """Send each arrival at its time over keep-alive connections; one Sent per arrival."""
    host, _, port = base_url.removeprefix("http://").partition(":")

    async def drive() -> list[Sent]:
        lean = LeanHttp(host, int(port), timeout_s)
        out: list[Sent] = []

        async def one(arrival: Arrival) -> None:
            await asyncio.sleep(max(0.0, t0 + arrival.time - time.monotonic()))
            try:
                status, _ = await lean.post_json("/infer", request_body(arrival))
            except _TRANSPORT_ERRORS:
                status = None
            out.append(Sent(arrival, status, time.monotonic() - t0 - arrival.time))

        t0 = time.monotonic() + 0.2  # every coroutine is waiting before the first send
        await asyncio.gather(*(one(a) for a in arrivals))
        lean.close()
        return out

    return asyncio.run(drive())


def closed_loop_rate(base_url: str, clients: int, seconds: float) -> float:
    """Answered interactive batch-1 requests per second with `clients` sending back to back."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    body = request_body(Arrival(0.0, WORKLOAD, "onnx", "fp32", "interactive", 1, 10.0))

    async def drive() -> float:
        lean = LeanHttp(host, int(port), 30.0)
        done = 0
        end = time.monotonic() + seconds

        async def client() -> None:
            nonlocal done
            while time.monotonic() < end:
                status, _ = await lean.post_json("/infer", body)
                done += status == 200

        await asyncio.gather(*(client() for _ in range(clients)))
        lean.close()
        return done / seconds

    return asyncio.run(drive())


# ------------------------------------------------------------------ figures
def class_figures(sent: Sequence[Sent], job_class: str) -> dict[str, float]:
    """Count, attainment of all sent, and answered ok samples of one class."""
    mine = [s for s in sent if s.arrival.job_class == job_class]
    ok = [s for s in mine if s.status == 200]
    return {
        "sent": len(mine),
        "attainment": sum(s.in_slo for s in mine) / len(mine) if mine else math.nan,
        "ok_samples": float(sum(s.arrival.samples for s in ok)),
        "unanswered": sum(s.status is None for s in mine),
        # Why the misses missed: answered late, refused (429), shed or failed (503).
        "late": sum(1 for s in ok if s.latency > s.arrival.slo),
        "refused": sum(1 for s in mine if s.status == 429),
        "shed": sum(1 for s in mine if s.status == 503),
        "p99_ms": float(np.percentile([s.latency for s in ok], 99)) * 1e3 if ok else math.nan,
    }


def overload_figures(sent: Sequence[Sent], duration_s: float, capacity: float) -> dict[str, float]:
    """In-SLO goodput ÷ capacity, no-answers, p99 of refusals, late share of the admitted."""
    refused = [s.latency for s in sent if s.status == 429]
    admitted = [s for s in sent if s.status not in (429, None)]
    late = sum(1 for s in admitted if s.latency > s.arrival.slo)
    return {
        "sent": len(sent),
        "goodput_ratio": sum(s.in_slo for s in sent) / duration_s / capacity,
        "unanswered": sum(s.status is None for s in sent),
        "refused": len(refused),
        "refusal_p99_ms": float(np.percentile(refused, 99)) * 1e3 if refused else math.nan,
        "admitted_late_share": late / len(admitted) if admitted else math.nan,
    }


# ------------------------------------------------------------------ twin
def twin_models(
    interactive_ms: dict[int, float], batch_ms: dict[int, float], groups: Sequence[str]
) -> dict[str, FixedServiceTime]:
    """Per lane group, service times measured in this run (interpolated between sizes)."""
    tables = {
        "interactive": {n: t / 1e3 for n, t in interactive_ms.items()},
        "batch": {n: t / 1e3 for n, t in batch_ms.items()},
    }
    return {g: FixedServiceTime({WORKLOAD: tables.get(g, tables["batch"])}) for g in groups}


def simulate_twin(
    config: SchedulerConfig,
    arrivals: Sequence[Arrival],
    models: dict[str, FixedServiceTime],
    jitter: float,
    cores: int,
    request_cpu_s: float = 0.0,
) -> list[Sent]:
    """The same arrivals through the same core on a virtual clock, as `Sent` records."""
    result = simulate(
        config,
        arrivals,
        models,
        {WORKLOAD: RESNET18.token_base},
        jitter=jitter,
        seed=1,
        cores=cores,
        request_cpu_s=request_cpu_s,
    )
    by_time = sorted(arrivals, key=lambda a: a.time)
    return [_as_sent(job, a) for job, a in zip(result.jobs, by_time, strict=True)]


def _as_sent(job: Job, arrival: Arrival) -> Sent:
    status = {"ok": 200, "rejected": 429, "shed": 503}.get(job.outcome or "")
    end = job.end if job.end is not None else math.inf
    return Sent(arrival, status, end - job.arrival)
