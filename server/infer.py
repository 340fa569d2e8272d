"""POST /infer: read the body, decode it, submit a Job, wait for it (or the client leaving).

Two body forms share the route, chosen by Content-Type: JSON (`InferRequest`),
or a binary tensor (`application/octet-stream` with X-Shape/X-Dtype, or
`application/x-npy`) whose options come from query parameters or their X-
headers (`BINARY_OPTIONS`). The body is read with a running byte count, so no
body over the limit is ever buffered; bodies above `INLINE_DECODE_BYTES` are
parsed and decoded on a worker thread, never on the event loop.

The request itself runs through the protocol-neutral core
(server/request_core.py). `serve_http` is what the HTTP inference routes add
around it — admission before the body is read, the body limit, the disconnect
watch; a route brings only its wire format (the KServe v2 routes in
server/kserve.py use it too).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from server.codecs import (
    NPY_TYPES,
    OCTET_STREAM,
    decode_b64_tensor,
    decode_binary,
    decode_nested_list,
    encode_outputs,
)
from server.echo import echo
from server.errors import BodyTooLarge, UnsupportedMediaType
from server.http_guard import BODY_TIMEOUT_KEY
from server.json_budget import check_json_values, json_value_limit
from server.offload import off_loop_if
from server.request_core import Answer, InferCall, admit, count_invalid, infer, job_timing
from server.schemas import InferParams, InferQuery, InferRequest, InferResponse
from server.wire_ints import parse_wire_int

if TYPE_CHECKING:
    from server.gateway import Gateway

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


class Decoded(Protocol):
    """What an HTTP route's parser returns: the core's call, plus what its answer needs."""

    @property
    def call(self) -> InferCall: ...


@dataclass(frozen=True)
class InferDecoded:
    """A decoded POST /infer request: the call and how to encode its outputs."""

    call: InferCall
    params: InferParams


D = TypeVar("D", bound=Decoded)


async def handle_infer(request: Request, gw: Gateway) -> Response:
    """Validate, submit, wait (or notice the client leaving), and answer."""

    async def parse(body: bytes) -> InferDecoded:
        return await _parse(request, gw, body)

    is_json = _is_json(request.headers.get("content-type", "application/json"))
    json_limit = json_value_limit(gw.config, gw.models.specs().values()) if is_json else None
    done = await serve_http(request, gw, parse, json_limit)
    if done is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return await _respond(*done)


async def serve_http(
    request: Request,
    gw: Gateway,
    parse: Callable[[bytes], Awaitable[D]],
    json_limit: int | None = None,
) -> tuple[D, Answer] | None:
    """What every HTTP inference route shares around the request core: admission before
    the body is read, the body limit, the route's own `parse`, the disconnect watch.

    Returns None when the client left first (before its body was read too);
    raises the domain error of a request that is invalid or did not end "ok".
    `json_limit`: the body is JSON, refused (413) while it is read once it may hold
    more array elements than this (server/json_budget.py).
    """
    arrival = admit(gw)
    try:
        body = await read_body(request, gw.config.max_body_bytes, json_limit)
        decoded = await parse(body)
    except ClientDisconnect:
        _body_not_received(request, gw)
        return None
    except Exception:
        count_invalid(gw, request.path_params.get("name", "unknown"), "interactive")
        raise
    answer = await infer(gw, decoded.call, _client_gone(request), arrival)
    return None if answer is None else (decoded, answer)


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


async def _parse(request: Request, gw: Gateway, body: bytes) -> InferDecoded:
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


def _decode_json(gw: Gateway, body: bytes) -> InferDecoded:
    check_json_values(body, json_value_limit(gw.config, gw.models.specs().values()))
    request = InferRequest.model_validate_json(body)
    if request.batch_size is not None:
        return InferDecoded(_call(request, samples=request.batch_size), request)
    if isinstance(request.inputs, list):
        array = decode_nested_list(request.inputs)
    else:
        assert request.inputs is not None  # InferRequest checks exactly one source
        tensor = request.inputs
        array = decode_b64_tensor(tensor.data, tensor.shape, tensor.dtype)
    return InferDecoded(_call(request, inputs=array), request)


def _call(params: InferParams, **data: Any) -> InferCall:
    return InferCall(
        model=params.model,
        job_class=params.job_class,
        slo_ms=params.slo_ms,
        backend=params.backend,
        precision=params.precision,
        **data,
    )


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
) -> InferDecoded:
    params = InferQuery.model_validate(options)
    gw.models.require(params.model)  # 404 before the body's bytes are looked at
    array = decode_binary(body, content_type, shape, dtype)
    return InferDecoded(_call(params, inputs=array), params)


async def _client_gone(request: Request) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect:
    # this waits on the server's event, it does not poll.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _respond(decoded: InferDecoded, answer: Answer) -> Response:
    job, params = answer.job, decoded.params
    big = answer.outputs.size > INLINE_ENCODE_ELEMENTS
    encoded = await off_loop_if(big, encode_outputs, answer.outputs, params.return_, params.top_k)
    assert job.lane is not None
    response = InferResponse(
        request_id=uuid.uuid4().hex,
        model=job.workload,
        backend=job.backend,
        precision=job.precision,
        job_class=job.job_class,
        outputs=encoded,
        timing=job_timing(job),
        slo_ms=answer.slo_ms,
        slo_met=job.slo_met,
        batch_size=answer.batch_size,
        lane=job.lane,
        samples=job.samples,
    )
    return Response(response.model_dump_json(by_alias=True), media_type="application/json")
