"""Every error → HTTP status mapping of the gateway, in one place.

Domain errors are raised where they happen (codecs, the scheduling core, lanes,
the dispatcher) with the values that explain them; `classify` turns any of
them into a `Problem` (a status, an `ErrorBody`, headers) that each protocol
renders in its own form; `error_response` is the HTTP rendering and
`install_error_handlers` routes FastAPI's exception handling through it. Nothing
else chooses a status.

| error                                   | status | `error`         |
|-----------------------------------------|--------|-----------------|
| malformed JSON                          | 400    | invalid_input   |
| no or wrong bearer token (server/auth)  | 401    | unauthorized    |
| the token lacks the route's role        | 403    | forbidden       |
| schema / InputError / bad query         | 422    | invalid_input   |
| unknown model                           | 404    | unknown_model   |
| config reload needing a restart         | 409    | conflict        |
| unknown backend or precision of a model | 422    | invalid_input   |
| body or samples over the limit          | 413    | too_large       |
| JobTooLarge (never fits the tokens)     | 413    | too_large       |
| unsupported Content-Type                | 415    | invalid_input   |
| PredictedLate (forecast past deadline)  | 429    | predicted_late  |
| QueueFull                               | 429    | queue_full      |
| shed (cannot meet its deadline)         | 503    | shed            |
| worker died / lane failed / node lost   | 503    | worker_failed   |
| NoLane (the class's lanes all left)     | 503    | unavailable     |
| not ready, shutting down                | 503    | unavailable     |
| start-up failed (/readyz)               | 503    | startup_failed  |
| anything else (text only in the log)    | 500    | internal_error  |

Before a request reaches the application, server/http_guard.py answers in the
same form: 503 `unavailable` (too many connections), 431 `too_large` (header
bytes or lines), 408 `timeout` (headers or body too slow).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.base import ChoiceError
from scheduling.errors import JobTooLarge, NoLane, PredictedLate, QueueFull, UnknownWorkload
from scheduling.job import Job
from server.codecs import InputError, TooLargeError
from server.echo import clip
from server.lanes.base import LaneError
from server.schemas import AdmissionForecast, ErrorBody, error_body_from_validation

log = logging.getLogger("mlws.server")
#: Longest `detail` and `field` of an answer: a backstop for any message that quotes
#: client input without `server.echo` (each quote is short; a message is a line).
MAX_DETAIL_CHARS, MAX_FIELD_CHARS = 1000, 200


#: `error` codes of the HTTP layer's own refusals (routing, methods).
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


class GatewayError(Exception):
    """An error the gateway raises on purpose, with its status and `ErrorBody` code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class MalformedBody(GatewayError):
    """The body is not parseable JSON (or not an object)."""

    status, code = 400, "invalid_input"


class Unauthorized(GatewayError):
    """No bearer token, or one the gateway does not know (server/auth.py)."""

    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    """A known token without the role the route needs (server/auth.py)."""

    status, code = 403, "forbidden"


class UnknownModel(GatewayError):
    """The request names a model the gateway does not serve."""

    status, code = 404, "unknown_model"


class UnknownOption(GatewayError):
    """A backend or precision the named model is not loaded on."""

    status, code = 422, "invalid_input"


class BodyTooLarge(GatewayError):
    """The body exceeds max_body_mb (by Content-Length or by counted bytes)."""

    status, code = 413, "too_large"


class UnsupportedMediaType(GatewayError):
    """A Content-Type the route cannot read."""

    status, code = 415, "invalid_input"


class Unavailable(GatewayError):
    """Not ready yet, or shutting down: retry later or elsewhere."""

    status, code = 503, "unavailable"


class StartupFailed(GatewayError):
    """Start-up failed: the gateway will not become ready by waiting."""

    status, code = 503, "startup_failed"


class Shed(GatewayError):
    """The scheduler dropped the job: it could not meet its deadline."""

    status, code = 503, "shed"


class WorkerFailed(GatewayError):
    """The dispatch carrying the job failed (worker died, runner raised)."""

    status, code = 503, "worker_failed"


def outcome_error(job: Job, aborted: str | None = None) -> GatewayError:
    """The error a request gets for a job that did not end "ok"."""
    if aborted is not None:
        return Unavailable(aborted)
    reason = job.error or "no reason given"
    if job.outcome == "shed":
        return Shed(f"shed: {reason}")
    if job.outcome == "error":
        return WorkerFailed(reason)
    if job.outcome == "cancelled":
        return Unavailable(reason)
    return GatewayError(f"job {job.id} ended with outcome {job.outcome!r} and no outputs")


@dataclass(frozen=True)
class Problem:
    """What went wrong, independent of the protocol that reports it.

    Every protocol renders the same Problem: HTTP /infer as an `ErrorBody`, the
    KServe v2 HTTP routes as ``{"error": detail}``, gRPC as a status code and
    message (server/grpc_v2/). `status` is the HTTP status, the common scale.
    """

    status: int
    body: ErrorBody
    #: Retry-After (429 and 503 answers) and Allow (405) when they apply.
    headers: dict[str, str]

    @property
    def error(self) -> str:
        """The short machine-readable code, e.g. "predicted_late"."""
        return self.body.error

    @property
    def detail(self) -> str:
        """One line a client can act on."""
        return self.body.detail

    @property
    def field(self) -> str | None:
        """The offending field or header, if one is to blame."""
        return self.body.field

    @property
    def retry_after_s(self) -> int | None:
        """Seconds to wait before retrying, for refusals that say so."""
        value = self.headers.get("Retry-After")
        return None if value is None else int(value)


def classify(exc: BaseException, retry_after_s: int = 1) -> Problem:
    """The one mapping from an exception to what the client is told.

    Retry-After is `retry_after_s`, except for a refusal by predicted completion,
    whose Retry-After is the core's predicted drain rounded up to whole seconds
    (HTTP allows no fraction; the body has it in ms).
    """
    status, body, retry = _classify(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)  # a 405's Allow: the methods the route takes
    if retry:
        seconds = retry_after_s
        if isinstance(exc, PredictedLate):
            seconds = max(1, math.ceil(exc.retry_after))
        headers["Retry-After"] = str(seconds)
    if status >= 500 and not isinstance(exc, GatewayError):
        # A bug's text may hold anything (paths, inputs): the log has it, the client
        # gets a reference to find it by.
        ref = uuid.uuid4().hex[:12]
        log.error("internal error (reference %s): %s", ref, exc, exc_info=exc)
        if status == 500:
            body.detail = f"internal error (reference {ref}); the server log has the details"
    body.detail = clip(body.detail, MAX_DETAIL_CHARS)
    body.field = None if body.field is None else clip(body.field, MAX_FIELD_CHARS)
    return Problem(status, body, headers)


def error_response(exc: BaseException, retry_after_s: int = 1) -> JSONResponse:
    """`exc` as POST /infer's (and every non-v2 route's) HTTP answer: an `ErrorBody`."""
    problem = classify(exc, retry_after_s)
    body = problem.body
    # `admission` appears only on predicted_late refusals; `field` is always there.
    content = body.model_dump(exclude={"admission"} if body.admission is None else None)
    return JSONResponse(content, status_code=problem.status, headers=problem.headers or None)


def _classify(exc: BaseException) -> tuple[int, ErrorBody, bool]:
    """(status, body, whether a Retry-After applies) for `exc`."""
    if isinstance(exc, GatewayError):
        retry = exc.status in (429, 503)
        return exc.status, ErrorBody(error=exc.code, detail=str(exc), field=exc.field), retry
    if isinstance(exc, TooLargeError):
        return 413, ErrorBody(error="too_large", detail=str(exc), field=exc.field), False
    if isinstance(exc, InputError):
        return 422, ErrorBody(error="invalid_input", detail=str(exc), field=exc.field), False
    if isinstance(exc, PredictedLate):
        return 429, _predicted_late_body(exc), True
    if isinstance(exc, QueueFull):
        return 429, ErrorBody(error="queue_full", detail=str(exc), field="class"), True
    if isinstance(exc, JobTooLarge):
        return 413, ErrorBody(error="too_large", detail=str(exc), field="model"), False
    if isinstance(exc, NoLane):
        return 503, ErrorBody(error="unavailable", detail=str(exc)), True
    if isinstance(exc, UnknownWorkload):
        return 404, ErrorBody(error="unknown_model", detail=str(exc), field="model"), False
    if isinstance(exc, ChoiceError):
        return 422, ErrorBody(error="invalid_input", detail=str(exc)), False
    if isinstance(exc, LaneError):
        return 503, ErrorBody(error="worker_failed", detail=str(exc)), True
    if isinstance(exc, RequestValidationError | ValidationError):
        return _validation(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        allow = (exc.headers or {}).get("Allow")
        if exc.status_code == 405 and allow:
            detail = f"method not allowed on this route; it takes {allow}"
        return exc.status_code, ErrorBody(error=code, detail=detail), False
    return 500, ErrorBody(error="internal_error", detail="internal error"), False


def _predicted_late_body(exc: PredictedLate) -> ErrorBody:
    arrival = exc.deadline - exc.slo
    forecast = AdmissionForecast(  # ms after arrival, as the client measures
        predicted_finish_ms=(exc.predicted_finish - arrival) * 1e3,
        deadline_ms=exc.slo * 1e3,
        retry_after_ms=exc.retry_after * 1e3,
    )
    return ErrorBody(error="predicted_late", detail=str(exc), admission=forecast)


def _validation(errors: Any) -> tuple[int, ErrorBody, bool]:
    """Pydantic errors: 400 when the body is not JSON at all, else 422 naming the field."""
    errors = list(errors)
    for err in errors:
        if err.get("type") in ("json_invalid", "json_type"):
            message = str(err.get("msg", "invalid JSON"))
            detail = f"body is not valid JSON: {message.removeprefix('Invalid JSON: ')}"
            return 400, ErrorBody(error="invalid_input", detail=detail, field="body"), False
    return 422, error_body_from_validation(errors), False


def install_error_handlers(app: FastAPI, retry_after_s: int = 1) -> None:
    """Route every exception FastAPI sees through `error_response`."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, retry_after_s)

    for exc_type in (
        GatewayError,
        InputError,
        PredictedLate,
        QueueFull,
        JobTooLarge,
        UnknownWorkload,
        ChoiceError,
        LaneError,
        RequestValidationError,
        ValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle)
