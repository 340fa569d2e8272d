"""A gateway's start-up, and how a failed one is reported.

`load(gw)` runs in a background task (check, export, load, calibrate), so that
/healthz answers during it and /readyz turns 200 when every lane has loaded and
warmed every configured model. An exception there would otherwise vanish with
the task and leave /readyz at 503 "calibrating" for ever. Instead the step's
error ends the start-up as `failed` with a one-line reason (logged once, on
/readyz and /stats), and `mlws serve` exits non-zero with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse

from server.errors import StartupFailed, Unavailable, classify
from server.lanes.base import LaneBatch, LaneError
from server.lanes.export import export_models
from server.service_checks import check_service_models
from server.service_log import ServiceKey

if TYPE_CHECKING:
    from server.gateway import Gateway

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
    problem = classify(exc, retry_after_s)
    body = {**problem.body.model_dump(exclude={"admission"}), "phase": phase}
    # Retrying a failed start-up is no use: it needs a new config or file, and a restart.
    headers = {} if phase == "failed" else problem.headers
    return JSONResponse(body, status_code=problem.status, headers=headers)


#: Timed runs per (model, backend, precision, size) before the gateway turns ready.
CALIBRATION_RUNS = 3


async def load(gw: Gateway) -> None:
    """Background start-up; any step's error ends it as `failed` with a one-line reason
    (logged once), instead of vanishing with the task and leaving /readyz waiting."""
    try:
        await _start_up(gw)
    except Exception as exc:
        gw.error = failure_line(gw.phase, exc)
        gw.phase = "failed"
        log_failure(gw.error, exc)


async def _start_up(gw: Gateway) -> None:
    """Check that every model can be timed, export ONNX once in this process, start
    every lane, calibrate."""
    gw.phase = "checking"
    # On the loop, before the first await: a few predictions, and the phase is
    # "exporting" by the time uvicorn answers its first request.
    check_service_models(gw.config, gw.models.specs(), gw.dispatcher.service_times)
    gw.phase = "exporting"
    await asyncio.to_thread(export_models, gw.config, gw.models.workloads())
    gw.phase = "loading"
    if gw.cluster is not None:
        await gw.cluster.place_at_start()
    await gw.pool.start()
    if gw.pool.error:
        raise StartupError(gw.pool.error)
    if gw.cluster is not None:
        gw.cluster.record_nodes()
    gw.phase = "calibrating"
    await _calibrate(gw)
    gw.phase = "ready"
    if gw.cluster is not None:
        gw.cluster.start()
    log.info("ready: %d lane(s), models %s", len(gw.pool.lanes), ", ".join(gw.models.names()))


async def _calibrate(gw: Gateway) -> None:
    """Seed each lane group's service-time model with timed runs at batch 1 and the
    largest dispatch, on the group's first lane that holds the model.

    Without it the scheduler knows no service times until traffic arrives: the
    first long batch dispatches would ignore max_dispatch_ms and admission would
    admit everything.
    """
    keys = [
        (model.name, backend, precision)
        for model in (served.config for served in gw.models)
        for backend in model.backends
        for precision in model.precisions
    ]
    for group in gw.config.scheduler.groups():
        lanes = [lane for lane in gw.pool.lanes if lane.spec.group == group.name]
        for key in keys:
            # Under a lane budget, a lane that loaded it (none: it is learned from its
            # first dispatches, like a model loaded at run time).
            lane = next((x for x in lanes if key in {r.key for r in x.spec.runners}), None)
            if lane is None:
                log.info("%s not calibrated on lane group %s: no lane holds it", key, group.name)
                continue
            cap = gw.scheduler.largest_dispatch(key[0], key[2])
            for n in sorted({1, cap}):
                await _calibrate_size(gw, group.name, lane.index, lane.spec.threads, key, n)


async def _calibrate_size(
    gw: Gateway, group: str, lane: int, threads: int, key: tuple[str, str, str], n: int
) -> None:
    """Timed runs of `key` at batch `n` on `lane`, learned and logged (start-up takes a while:
    the log says where it is)."""
    started = time.monotonic()
    total = 0.0
    for _ in range(CALIBRATION_RUNS):
        result = await gw.pool.run(lane, LaneBatch(-1, key, [(None, 0, n)]))
        gw.dispatcher.service_times.observe(group, key, n, result.service_s)
        # Before admission nothing else runs: a contention-free row.
        gw.dispatcher.service_log.record(ServiceKey(*key, n, threads, 0), result.service_s)
        total += result.service_s
    log.info(
        "calibrated %s on %s %s at batch %d (lane group %s): %.1f ms mean of %d runs, %.1f s",
        *key,
        n,
        group,
        1e3 * total / CALIBRATION_RUNS,
        CALIBRATION_RUNS,
        time.monotonic() - started,
    )
