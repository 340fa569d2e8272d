"""Open-loop load against a live gateway: requests leave on a Poisson schedule.

Open loop means a slow response never delays the next send, so queueing shows
up in the numbers instead of throttling the load (the "coordinated omission"
trap of closed-loop clients). Latency is measured from each request's
*scheduled* send time, not from when the client got around to sending it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import httpx

from scheduling.job import Job
from scheduling.simulator import Arrival

#: HTTP status → job outcome, for the trace.
OUTCOMES: dict[int, str] = {200: "ok", 429: "rejected", 503: "shed"}


def request_body(arrival: Arrival) -> dict[str, object]:
    """A synthetic-input request for one arrival (the server makes the tensor)."""
    return {
        "model": arrival.workload,
        "class": arrival.job_class,
        "backend": arrival.backend,
        "precision": arrival.precision,
        "slo_ms": arrival.slo * 1e3,
        "batch_size": arrival.samples,
        "top_k": 1,
    }


def job_for(index: int, arrival: Arrival) -> Job:
    return Job(
        id=index,
        workload=arrival.workload,
        backend=arrival.backend,
        precision=arrival.precision,
        job_class=arrival.job_class,
        samples=arrival.samples,
        arrival=arrival.time,
        deadline=arrival.time + arrival.slo,
        enqueue=arrival.time,
    )


def record_response(job: Job, response: httpx.Response | None, end: float) -> None:
    """Fill the job's timestamps and outcome from what the gateway said."""
    job.end = end
    if response is None:
        job.outcome = "error"
        return
    status = response.status_code
    job.outcome = OUTCOMES.get(status, "error")  # type: ignore[assignment]
    if status != 200:
        return
    body = response.json()
    service = body["timing"]["service_ms"] / 1e3
    # The gateway's own split of the e2e time; placed on the client's time axis.
    job.start = max(job.arrival, end - service)
    job.lane = body.get("lane")


#: Told each time a request has its answer (or gave up): progress of a run.
OnAnswer = Callable[[], None]


async def _one(
    client: httpx.AsyncClient,
    job: Job,
    arrival: Arrival,
    t0: float,
    on_answer: OnAnswer | None,
) -> None:
    delay = t0 + arrival.time - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        response: httpx.Response | None = await client.post("/infer", json=request_body(arrival))
    except httpx.HTTPError:
        response = None
    record_response(job, response, time.monotonic() - t0)
    if on_answer is not None:
        on_answer()


async def drive(
    base_url: str,
    arrivals: Sequence[Arrival],
    *,
    timeout_s: float = 30.0,
    on_answer: OnAnswer | None = None,
) -> list[Job]:
    """Send every arrival at its scheduled time; returns one finished Job per arrival.

    Bounded: each request gives up after `timeout_s` (recorded as an error), so
    the run ends at most `timeout_s` after the last scheduled send.
    """
    jobs = [job_for(i, a) for i, a in enumerate(arrivals)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.gather(
            *(_one(client, job, a, t0, on_answer) for job, a in zip(jobs, arrivals, strict=True))
        )
    return jobs


def run_load(
    base_url: str,
    arrivals: Sequence[Arrival],
    *,
    timeout_s: float = 30.0,
    on_answer: OnAnswer | None = None,
) -> list[Job]:
    """Synchronous wrapper for the experiment runner and the benchmarks."""
    return asyncio.run(drive(base_url, arrivals, timeout_s=timeout_s, on_answer=on_answer))
