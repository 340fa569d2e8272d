"""POST /infer: read the body, decode it, submit a Job, wait for it (or the client leaving).

Two body forms share the route, chosen by Content-Type: JSON (`InferRequest`),
or a binary tensor (`application/octet-stream` with X-Shape/X-Dtype, or
`application/x-npy`) whose options come from query parameters or their X-
headers (`BINARY_OPTIONS`). The body is read with a running byte count, so no
body over the limit is ever buffered; bodies above `INLINE_DECODE_BYTES` are
parsed and decoded on a worker thread, never on the event loop.

`run_request` is the part every inference route shares — admission, the body
limit, backend/precision resolution, the Job, waiting, the outcome → error
mapping; a route brings only its wire format (the KServe v2 routes in
server/kserve.py use it too).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from scheduling.job import Job
from server.codecs import (
    NPY_TYPES,
    OCTET_STREAM,
    TooLargeError,
    conform_batch,
    decode_b64_tensor,
    decode_binary,
    decode_nested_list,
    encode_outputs,
)
from server.config import ModelConfig
from server.dispatcher import JobResult
from server.echo import echo
from server.errors import (
    BodyTooLarge,
    Unavailable,
    UnknownModel,
    UnknownOption,
    UnsupportedMediaType,
    outcome_error,
)
from server.http_guard import BODY_TIMEOUT_KEY
from server.json_budget import check_json_values, json_value_limit
from server.schemas import InferParams, InferQuery, InferRequest, InferResponse, Timing
from server.wire_ints import parse_wire_int
from workloads.specs import WorkloadSpec

if TYPE_CHECKING:
    from server.app import Gateway

log = logging.getLogger("mlws.server")
#: Bodies above this are parsed and decoded on a worker thread, not on the event loop.
INLINE_DECODE_BYTES = 256 * 1024
#: Output elements above which encoding the response moves off the event loop.
INLINE_ENCODE_ELEMENTS = 50_000
#: Binary-path options: query parameter name → fallback header.
BINARY_OPTIONS: dict[str, str] = {
    "model": "X-Model",
    "class": "X-Class",
    "backend": "X-Backend",
    "precision": "X-Precision",
    "slo_ms": "X-Slo-Ms",
    "return": "X-Return",
    "top_k": "X-Top-K",
}


@dataclass
class Parsed:
    """A decoded request: its options and its input batch (None: synthesize)."""

    params: InferParams
    inputs: np.ndarray | None
    samples: int


#: A route's own Parsed subclass (the v2 route adds its requested outputs).
P = TypeVar("P", bound=Parsed)
T = TypeVar("T")


@dataclass
class Finished(Generic[P]):
    """A request whose job ended "ok": what a route needs to write its answer."""

    parsed: P
    job: Job
    #: (samples, *output_shape) float32 rows of this request.
    outputs: np.ndarray
    #: Samples of the micro-batch the job's last part ran in.
    batch_size: int
    #: The latency budget the job was scheduled with.
    slo_ms: float


async def handle_infer(request: Request, gw: Gateway) -> Response:
    """Validate, submit, wait (or notice the client leaving), and answer."""

    async def parse(body: bytes) -> Parsed:
        return await _parse(request, gw, body)

    is_json = _is_json(request.headers.get("content-type", "application/json"))
    json_limit = json_value_limit(gw.config, gw.specs.values()) if is_json else None
    done = await run_request(request, gw, parse, json_limit)
    if done is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return await _respond(done)


async def run_request(
    request: Request,
    gw: Gateway,
    parse: Callable[[bytes], Awaitable[P]],
    json_limit: int | None = None,
) -> Finished[P] | None:
    """The path every inference route shares: admit, read, parse, submit, wait, check.

    `parse` is the route's own wire format (POST /infer, KServe v2); everything
    else — the body limit, backend/precision resolution, the invalid-request
    metric, the Job and its deadline, the disconnect watch and the outcome →
    error mapping — is this one function. Returns None when the client left
    first (before its body was read too); raises the domain error of a job that did
    not end "ok". `json_limit`: the body is JSON, refused (413) while it is read once it
    may hold more array elements than this (server/json_budget.py).
    """
    arrival = gw.dispatcher.clock()
    if not gw.accepting:
        raise Unavailable(gw.not_ready_reason())
    parsed: P | None = None
    try:
        body = await read_body(request, gw.config.max_body_bytes, json_limit)
        parsed = await parse(body)
        model, backend, precision = _resolve(gw, parsed.params)
    except ClientDisconnect:
        _body_not_received(request, gw)
        return None
    except Exception:
        model_name = parsed.params.model if parsed else "unknown"
        job_class = parsed.params.job_class if parsed else "interactive"
        gw.metrics.count_request(model_name, job_class, "invalid")
        raise
    params = parsed.params
    slo_ms = params.slo_ms or gw.config.default_slo_ms[params.job_class]
    job = Job(
        id=next(gw.ids),
        workload=model.name,
        backend=backend,
        precision=precision,
        job_class=params.job_class,
        samples=parsed.samples,
        arrival=arrival,
        deadline=arrival + slo_ms / 1e3,
        payload=parsed.inputs,
    )
    future = gw.dispatcher.submit(job)
    result = await _wait(request, gw, job, future)
    if result is None:
        return None
    if result.aborted is not None or job.outcome != "ok" or result.outputs is None:
        raise outcome_error(job, result.aborted)
    return Finished(parsed, job, result.outputs, result.batch_size, slo_ms)


async def off_loop_if(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, on a worker thread when `big`.

    Parsing or encoding tens of MB takes tens of milliseconds, which must not
    stall the event loop; small payloads are cheaper inline than a thread hop.
    """
    if big:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


async def read_body(request: Request, limit: int, json_limit: int | None = None) -> bytes:
    """The whole body, refusing more than `limit` bytes up front and while reading.

    Content-Length is checked first; the running count catches chunked bodies
    (and lying headers), so no body larger than the limit is ever buffered. With
    `json_limit`, a JSON body that may hold more array elements is refused as soon
    as the parts read show it, not after buffering all of it.
    """
    length = parse_wire_int(request.headers.get("content-length", ""))
    if length is not None and length > limit:
        raise BodyTooLarge(_too_large(length, limit), field="body")
    chunks, total, values = [], 0, 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(_too_large(total, limit, at_least=True), field="body")
        if json_limit is not None:
            values = check_json_values(chunk, json_limit, values)
        chunks.append(chunk)
    return b"".join(chunks)


def _body_not_received(request: Request, gw: Gateway) -> None:
    """Count and log, in one line, a request whose body never fully arrived: the client
    left (cancelled) or was too slow and got a 408 from server/http_guard.py (invalid)."""
    timed_out = bool(request.scope.get(BODY_TIMEOUT_KEY))
    model = request.path_params.get("name", "unknown")  # the v2 routes name the model
    gw.metrics.count_request(model, "interactive", "invalid" if timed_out else "cancelled")
    why = "body timed out (answered 408)" if timed_out else "client left before its body arrived"
    log.info("%s %s: %s", request.method, request.url.path[:200], why)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    mib = 1 << 20
    more = "more than " if at_least else ""
    return f"body of {more}{size / mib:.1f} MiB exceeds the {limit / mib:.1f} MiB limit"


async def _parse(request: Request, gw: Gateway, body: bytes) -> Parsed:
    """Decode the body by Content-Type; large bodies are decoded on a worker thread."""
    refuse_content_encoding(request)
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if _is_json(content_type):
        decode = _decode_json
        args: tuple[Any, ...] = (gw, body)
    elif media == OCTET_STREAM or media in NPY_TYPES:
        decode = _decode_binary
        args = (gw, body, content_type, _binary_options(request))
        args += (request.headers.get("x-shape"), request.headers.get("x-dtype"))
    else:
        raise UnsupportedMediaType(
            f"content type {echo(content_type)} is not supported; send application/json, "
            f"{OCTET_STREAM} or application/x-npy",
            field="Content-Type",
        )
    # Parsing a 25 MB JSON body takes tens of milliseconds: not on the event loop.
    return await off_loop_if(len(body) > INLINE_DECODE_BYTES, decode, *args)


def refuse_content_encoding(request: Request) -> None:
    """415 for a compressed body: no inference route decodes one, and reading gzip as
    JSON or tensor bytes would answer a misleading 400 or 422."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {echo(encoding)} is not supported; send the body uncompressed",
            field="Content-Encoding",
        )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _decode_json(gw: Gateway, body: bytes) -> Parsed:
    check_json_values(body, json_value_limit(gw.config, gw.specs.values()))
    request = InferRequest.model_validate_json(body)
    if request.batch_size is not None:
        _check_samples(request.batch_size, gw.config.max_request_samples, "batch_size")
        model_or_404(gw, request.model)
        return Parsed(request, None, request.batch_size)
    spec = gw.specs.get(request.model) or model_or_404(gw, request.model)
    if isinstance(request.inputs, list):
        array = decode_nested_list(request.inputs)
    else:
        assert request.inputs is not None  # InferRequest checks exactly one source
        tensor = request.inputs
        array = decode_b64_tensor(tensor.data, tensor.shape, tensor.dtype)
    batch = conform_batch(array, spec, gw.config.max_request_samples)
    return Parsed(request, batch, len(batch))


def _binary_options(request: Request) -> dict[str, str]:
    """Options of a binary request: query parameters, else their X- headers."""
    options = dict(request.query_params)
    for name, header in BINARY_OPTIONS.items():
        if name not in options and header.lower() in request.headers:
            options[name] = request.headers[header.lower()]
    return options


def _decode_binary(
    gw: Gateway,
    body: bytes,
    content_type: str,
    options: dict[str, str],
    shape: str | None,
    dtype: str | None,
) -> Parsed:
    params = InferQuery.model_validate(options)
    spec = model_or_404(gw, params.model)
    array = decode_binary(body, content_type, shape, dtype)
    batch = conform_batch(array, spec, gw.config.max_request_samples)
    return Parsed(params, batch, len(batch))


def _check_samples(samples: int, limit: int, field_name: str) -> None:
    if samples > limit:
        raise TooLargeError(
            field_name, f"{field_name}={samples} exceeds the limit of {limit} samples per request"
        )


def model_or_404(gw: Gateway, name: str) -> WorkloadSpec:
    """The spec of a served model, or UnknownModel (404) naming the choices."""
    spec = gw.specs.get(name)
    if spec is None:
        choices = ", ".join(gw.specs)
        raise UnknownModel(f"unknown model {echo(name)}; choose from: {choices}", field="model")
    return spec


def _resolve(gw: Gateway, params: InferParams) -> tuple[ModelConfig, str, str]:
    """The model's config and the backend and precision the request runs on."""
    model_or_404(gw, params.model)
    model = gw.config.model(params.model)
    assert model is not None
    backend = params.backend or model.default_backend
    if backend not in model.backends:
        raise UnknownOption(
            f"model {model.name!r} is not served on backend {echo(backend)}; "
            f"choose from: {', '.join(model.backends)}",
            field="backend",
        )
    precision = params.precision or model.default_precision
    if precision not in model.precisions:
        raise UnknownOption(
            f"model {model.name!r} is not served at precision {precision!r}; "
            f"choose from: {', '.join(model.precisions)}",
            field="precision",
        )
    return model, backend, precision


async def _wait(
    request: Request, gw: Gateway, job: Job, future: asyncio.Future[JobResult]
) -> JobResult | None:
    """The job's result, or None if the client disconnected first (job cancelled)."""
    disconnect = asyncio.create_task(_client_gone(request))
    try:
        await asyncio.wait({future, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # uvicorn cancels handlers when the graceful-shutdown timeout runs out.
        gw.dispatcher.cancel(job)
        raise
    finally:
        disconnect.cancel()
    if future.done() and not future.cancelled():
        return future.result()
    gw.dispatcher.cancel(job)
    return None


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect:
    # this waits on the server's event, it does not poll.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _respond(done: Finished[Parsed]) -> Response:
    job, params = done.job, done.parsed.params
    big = done.outputs.size > INLINE_ENCODE_ELEMENTS
    encoded = await off_loop_if(big, encode_outputs, done.outputs, params.return_, params.top_k)
    assert job.lane is not None
    response = InferResponse(
        request_id=uuid.uuid4().hex,
        model=job.workload,
        backend=job.backend,
        precision=job.precision,
        job_class=job.job_class,
        outputs=encoded,
        timing=job_timing(job),
        slo_ms=done.slo_ms,
        slo_met=job.slo_met,
        batch_size=done.batch_size,
        lane=job.lane,
        samples=job.samples,
    )
    return Response(response.model_dump_json(by_alias=True), media_type="application/json")


def job_timing(job: Job) -> Timing:
    """Where a finished job's time went: queue, service and end to end, in ms."""
    assert job.start is not None and job.end is not None
    forecast = None if job.predicted_end is None else (job.predicted_end - job.arrival) * 1e3
    return Timing(
        queue_ms=(job.start - job.arrival) * 1e3,
        service_ms=(job.end - job.start) * 1e3,
        e2e_ms=(job.end - job.arrival) * 1e3,
        forecast_ms=forecast,
    )
