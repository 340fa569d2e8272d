"""Every error as a gRPC status: the HTTP status `server.errors.classify` chooses, mapped once.

| HTTP status             | gRPC status code     |
|-------------------------|----------------------|
| 400, 413, 415, 422      | INVALID_ARGUMENT     |
| 401                     | UNAUTHENTICATED      |
| 403                     | PERMISSION_DENIED    |
| 404                     | NOT_FOUND            |
| 408, 504                | DEADLINE_EXCEEDED    |
| 429                     | RESOURCE_EXHAUSTED   |
| 499                     | CANCELLED            |
| 503                     | UNAVAILABLE          |
| anything else           | INTERNAL             |

The message is the Problem's detail; a refusal that says when to retry (429, 503)
carries ``retry-after`` (whole seconds) in the trailing metadata, as HTTP's
Retry-After header.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from server.errors import Problem, classify

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
RETRY_AFTER = "retry-after"


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status code of an HTTP status."""
    return CODES.get(http_status, grpc.StatusCode.INTERNAL)


def trailing_metadata(problem: Problem) -> tuple[tuple[str, str], ...]:
    """``retry-after`` when the problem says when to retry."""
    seconds = problem.retry_after_s
    return () if seconds is None else ((RETRY_AFTER, str(seconds)),)


async def abort(
    context: grpc.aio.ServicerContext, exc: BaseException, retry_after_s: int
) -> NoReturn:
    """End the call with `exc`'s status, message and trailing metadata."""
    problem = classify(exc, retry_after_s)
    await context.abort(
        status_code(problem.status), problem.detail, trailing_metadata=trailing_metadata(problem)
    )
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker
