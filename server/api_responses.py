"""The error statuses each route may answer, for FastAPI's `responses=`: one table.

The OpenAPI schema is the contract a client (or a fuzzer) holds the gateway to, so
every status a route can answer is documented with its body, and nothing else is.
A route names its own statuses (`error_responses(404, 422)`); the ones every route
can answer — the connection guard's refusals (server/http_guard.py), answered before
any routing, and the 500 of a bug — are the app's `GUARD_RESPONSES`. The 401/403 of
access control are added by server/openapi_contract.py, which knows the roles.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.schemas import ErrorBody

#: Every error status the gateway answers, with what it means.
ERROR_STATUSES: dict[int, str] = {
    400: "Malformed body: not JSON, or not what the protocol frames.",
    401: "No bearer token, or an unknown one (access control on).",
    403: "The token lacks the role this route needs.",
    404: "Unknown model (or model version).",
    409: "Not possible in the gateway's state (e.g. a reload needing a restart).",
    408: "Headers or body too slow (`limits.header_timeout_s`, `body_timeout_s`).",
    413: "Body, samples or JSON values over their limit.",
    415: "A Content-Type or Content-Encoding this route does not read.",
    422: "Invalid input: `field` names what, `detail` why.",
    429: "Refused: `predicted_late` (admission forecast) or `queue_full`; see Retry-After.",
    431: "Request headers too large or too many.",
    500: "A bug: the detail is a reference to the server log, never the error's text.",
    503: "Not ready, shutting down, shed, worker failed, or too many connections; see Retry-After.",
}
#: What any route may answer, whatever it does: the guard's refusals and a bug's 500.
GUARD_STATUSES = (408, 431, 500, 503)


class V2ErrorBody(BaseModel):
    """Body of a /v2 error: the Open Inference Protocol's `{"error": message}`.

    Refusals made before routing (the connection guard) carry the gateway's
    `ErrorBody` keys as well, so other keys are allowed.
    """

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="One-line human message.")


def error_responses(
    *statuses: int, model: type[BaseModel] = ErrorBody
) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for `statuses`, each a JSON `model` with its description."""
    return {status: {"model": model, "description": ERROR_STATUSES[status]} for status in statuses}


#: The app-wide `responses=`: every operation can answer these.
GUARD_RESPONSES = error_responses(*GUARD_STATUSES)
#: The /v2 router's: the same statuses in the protocol's error form.
V2_GUARD_RESPONSES = error_responses(*GUARD_STATUSES, model=V2ErrorBody)


def empty_response(description: str) -> dict[str, Any]:
    """A documented answer with no body (and so no Content-Type)."""
    return {"description": description, "content": {}}


#: A 200 whose body is Prometheus text, not JSON.
PROMETHEUS_TEXT = {
    200: {
        "description": "Prometheus text exposition format of every mlws_ series.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
