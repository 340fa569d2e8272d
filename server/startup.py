"""How a failed start-up is reported: one line, logged once, on /readyz and /stats.

The gateway starts up in a background task (check, export, load, calibrate);
an exception there would otherwise vanish with the task and leave /readyz at
503 "calibrating" for ever. Instead the step's error ends the start-up as
`failed` with a one-line reason, and `mlws serve` exits non-zero with it.
"""

from __future__ import annotations

import json
import logging

from fastapi.responses import JSONResponse

from server.errors import StartupFailed, Unavailable, error_response
from server.lanes import LaneError

log = logging.getLogger("mlws.server")

#: What each start-up phase does, for the failure line.
STEPS = {
    "starting": "start-up",
    "checking": "checking the service-time models",
    "exporting": "ONNX export",
    "loading": "starting the lanes",
    "calibrating": "calibration",
}


class StartupError(RuntimeError):
    """A start-up step failed for a reason already said in its message."""


#: Errors a user's files or settings cause: their message says it all, no traceback.
EXPECTED = (ValueError, OSError, ImportError, LaneError, StartupError)


def failure_line(phase: str, exc: BaseException) -> str:
    """One line naming the start-up step that failed and why (the exception's type
    only for a bug: the expected ones' messages are written for the user)."""
    message = " ".join(str(exc).split()) or "no message"
    kind = "" if isinstance(exc, EXPECTED) else f"{type(exc).__name__}: "
    return f"start-up failed in {STEPS.get(phase, phase)}: {kind}{message}"


def log_failure(line: str, exc: BaseException) -> None:
    """Log a start-up failure once: one line, with a traceback only for a bug."""
    log.error("%s", line, exc_info=None if isinstance(exc, EXPECTED) else exc)


def readiness_response(phase: str, reason: str, retry_after_s: int) -> JSONResponse:
    """/readyz's 503: the ErrorBody plus the start-up `phase` (`failed` after a failure)."""
    exc = StartupFailed(reason) if phase == "failed" else Unavailable(reason)
    answer = error_response(exc, retry_after_s)
    body = {**json.loads(answer.body), "phase": phase}
    # Retrying a failed start-up is no use: it needs a new config or file, and a restart.
    keep = phase != "failed"
    headers = {k: v for k, v in answer.headers.items() if keep and k.lower() == "retry-after"}
    return JSONResponse(body, status_code=answer.status_code, headers=headers)
