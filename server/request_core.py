"""One inference request, whatever protocol carried it.

Every protocol (POST /infer in server/infer.py, the KServe v2 HTTP routes in
server/kserve.py, KServe v2 over gRPC in server/grpc_v2/) is a thin adapter: it
decodes its wire format into an `InferCall`, awaits `infer`, and encodes the
`Answer` (or renders the raised error through `server.errors.classify`) in its
own form. Everything in between happens here, once: the model is resolved in
the gateway's catalogue, backend and precision chosen, class and SLO checked,
the input conformed to the model (shape, sample limit, finite values) or
synthesized, the Job submitted with its deadline, the wait raced against the
client going away, the outcome turned into an error, the outputs checked
finite.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scheduling.job import JOB_CLASSES, Job
from server.codecs import InputError, OutputError, TooLargeError, conform_batch
from server.dispatcher import JobResult
from server.echo import echo
from server.errors import Unavailable, outcome_error
from server.offload import off_loop_if
from server.schemas import MAX_SLO_MS, Timing

if TYPE_CHECKING:
    from server.catalogue import ServedModel
    from server.gateway import Gateway

#: Input bytes above which conforming (a copy, a finite check) moves off the event loop.
INLINE_CONFORM_BYTES = 256 * 1024


@dataclass(frozen=True)
class InferCall:
    """What every protocol decodes a request into."""

    model: str
    job_class: str = "interactive"
    #: The latency budget; None: the class default.
    slo_ms: float | None = None
    #: None: the model's default backend / precision.
    backend: str | None = None
    precision: str | None = None
    #: The decoded input, (n, *sample shape) or one sample; None: synthesize `samples`.
    inputs: np.ndarray | None = None
    #: With no inputs: how many samples to synthesize.
    samples: int | None = None


@dataclass
class Answer:
    """A request whose job ended "ok": what a protocol encodes."""

    job: Job
    #: (samples, *output_shape) float32 rows of this request, all finite.
    outputs: np.ndarray
    #: Samples of the micro-batch the job's last part ran in.
    batch_size: int
    #: The latency budget the job was scheduled with.
    slo_ms: float


def admit(gw: Gateway) -> float:
    """The arrival time of a request the gateway takes now; Unavailable (503) if it does
    not (starting, failed, shutting down). Protocols call it before reading a body."""
    if not gw.accepting:
        raise Unavailable(gw.not_ready_reason())
    return gw.dispatcher.clock()


async def infer(
    gw: Gateway,
    call: InferCall,
    gone: Awaitable[None] | None = None,
    arrival: float | None = None,
) -> Answer | None:
    """Run `call` through the scheduler and return its answer.

    `gone` completes when the client stops waiting (an HTTP disconnect, a
    cancelled gRPC call): the job is then cancelled (it leaves the queue) and
    None is returned. `arrival` is when the request began to arrive (default:
    now); its deadline counts from there. Raises the domain error of a request
    that is invalid, refused, shed or failed; an invalid one is counted.
    """
    try:
        if arrival is None:
            arrival = admit(gw)
        elif not gw.accepting:
            raise Unavailable(gw.not_ready_reason())
        # Counted until answered: unloading the model waits for it (503 while it loads).
        in_use = gw.models.using(call.model)
    except BaseException:
        if asyncio.iscoroutine(gone):
            gone.close()  # never to be awaited: no "never awaited" warning
        raise
    with in_use:
        return await _infer(gw, call, gone, arrival)


async def _infer(
    gw: Gateway, call: InferCall, gone: Awaitable[None] | None, arrival: float
) -> Answer | None:
    try:
        job, slo_ms = await _valid_job(gw, call, arrival)
        future = gw.dispatcher.submit(job)  # raises a refusal (429) at once
    except BaseException:
        if asyncio.iscoroutine(gone):
            gone.close()  # never to be awaited: no "never awaited" warning
        raise
    result = await _wait(gw, job, future, gone)
    if result is None:
        return None
    if result.aborted is not None or job.outcome != "ok" or result.outputs is None:
        raise outcome_error(job, result.aborted)
    check_outputs(result.outputs)
    return Answer(job, result.outputs, result.batch_size, slo_ms)


def count_invalid(gw: Gateway, model: str, job_class: str) -> None:
    """Count a request refused as invalid (a protocol's decoding failed, or the core's checks)."""
    job_class = job_class if job_class in JOB_CLASSES else "interactive"
    gw.metrics.count_request(model, job_class, "invalid")


async def _valid_job(gw: Gateway, call: InferCall, arrival: float) -> tuple[Job, float]:
    """`_job`, counting an invalid call."""
    try:
        return await _job(gw, gw.models.require(call.model), call, arrival)
    except Exception:
        count_invalid(gw, call.model if gw.models.get(call.model) else "unknown", call.job_class)
        raise


async def _job(
    gw: Gateway, served: ServedModel, call: InferCall, arrival: float
) -> tuple[Job, float]:
    """The Job of a valid call and its SLO in ms (raises the error naming what is not)."""
    backend, precision = served.runner_choice(call.backend, call.precision)
    _check_class(call.job_class)
    slo_ms = _slo_ms(gw, call)
    limit = gw.config.max_request_samples
    if call.inputs is None:
        payload, samples = None, _synthetic_samples(call.samples, limit)
    else:
        big = call.inputs.nbytes > INLINE_CONFORM_BYTES
        payload = await off_loop_if(big, conform_batch, call.inputs, served.spec, limit)
        samples = len(payload)
    job = Job(
        id=next(gw.ids),
        workload=served.name,
        backend=backend,
        precision=precision,
        job_class=call.job_class,
        samples=samples,
        arrival=arrival,
        deadline=arrival + slo_ms / 1e3,
        payload=payload,
    )
    return job, slo_ms


def _check_class(job_class: str) -> None:
    if job_class not in JOB_CLASSES:
        raise InputError(
            "class", f"class {echo(job_class)} is not one of: {', '.join(JOB_CLASSES)}"
        )


def _slo_ms(gw: Gateway, call: InferCall) -> float:
    if call.slo_ms is None:
        return gw.config.slo_ms[call.job_class]
    if not (math.isfinite(call.slo_ms) and 0 < call.slo_ms <= MAX_SLO_MS):
        raise InputError(
            "slo_ms", f"slo_ms must be a number > 0 and <= {MAX_SLO_MS:g}, got {call.slo_ms!r}"
        )
    return call.slo_ms


def _synthetic_samples(samples: int | None, limit: int) -> int:
    if samples is None or samples < 1:
        raise InputError("batch_size", "send inputs, or a batch_size of at least 1")
    if samples > limit:
        raise TooLargeError(
            "batch_size", f"batch_size={samples} exceeds the limit of {limit} samples per request"
        )
    return samples


def check_outputs(outputs: np.ndarray) -> None:
    """OutputError (a 500) for outputs no protocol can carry: no batch axis, NaN or inf
    (JSON cannot carry NaN, and a model emitting it has failed)."""
    if outputs.ndim < 2:
        raise OutputError(f"outputs must have a batch axis, got shape {outputs.shape}")
    if not np.isfinite(outputs).all():
        raise OutputError("model outputs contain NaN or inf")


async def _wait(
    gw: Gateway, job: Job, future: asyncio.Future[JobResult], gone: Awaitable[None] | None
) -> JobResult | None:
    """The job's result, or None if the client went away first (job cancelled)."""
    watch = None if gone is None else asyncio.ensure_future(gone)
    try:
        waits: set[asyncio.Future[object]] = {future}  # type: ignore[arg-type]
        if watch is not None:
            waits.add(watch)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # uvicorn cancels handlers when the graceful-shutdown timeout runs out; a gRPC
        # call's task is cancelled when its client cancels.
        gw.dispatcher.cancel(job)
        raise
    finally:
        if watch is not None:
            watch.cancel()
    if future.done() and not future.cancelled():
        return future.result()
    gw.dispatcher.cancel(job)
    return None


def job_timing(job: Job) -> Timing:
    """Where a finished job's time went: queue, service and end to end, in ms, and the
    end the scheduler forecast when it admitted the job."""
    assert job.start is not None and job.end is not None
    forecast = None if job.predicted_end is None else (job.predicted_end - job.arrival) * 1e3
    return Timing(
        queue_ms=(job.start - job.arrival) * 1e3,
        service_ms=(job.end - job.start) * 1e3,
        e2e_ms=(job.end - job.arrival) * 1e3,
        forecast_ms=forecast,
    )
