"""The operator's routes: lanes, metrics, the service-time model, statistics, the
observed service times as a profile, and each model's description for /v1/models."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from scheduling.tokens import TokenCost
from server.api_responses import PROMETHEUS_TEXT, error_responses
from server.catalogue import ServedModel
from server.config_reload import ReloadErrorBody, ReloadFailed, ReloadReport
from server.errors import classify
from server.gateway import Gateway
from server.scheduler_info import describe_scheduler
from server.service_log import ServiceKey, profile_csv, profile_rows
from server.service_times import describe


def add_operations_routes(app: FastAPI) -> None:
    """What an operator reads: lanes, metrics, the service-time model, statistics, and
    the observed service times as a profile."""

    @app.get("/v1/lanes", tags=["operations"])
    async def lanes(request: Request) -> dict[str, Any]:
        """Per lane still in the pool: its group, node (the gateway's own machine is
        "local"; on Ray, the node id), state (starting, ready, restarting, failed),
        threads and OS priority, kind, worker pid, ready, busy (the scheduler has it
        hold a dispatch), running (the dispatch its worker is executing), restarts.
        A lane whose node left the cluster is gone from the list."""
        gw: Gateway = request.app.state.gateway
        lanes = gw.pool.describe(gw.scheduler.lane_busy, gw.scheduler.node_of)
        return {"lanes": lanes, "ready": gw.pool.ready}

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=PROMETHEUS_TEXT)
    async def metrics(request: Request) -> Response:
        """Prometheus exposition of every mlws_ series."""
        body, content_type = request.app.state.gateway.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/predictor", tags=["operations"])
    async def predictor(request: Request) -> dict[str, Any]:
        """The service-time model: its source and, per (model, backend, precision,
        batch-size bucket), the online residual observed ÷ predicted and the
        base and corrected predictions it gives."""
        gw: Gateway = request.app.state.gateway
        return describe(gw.dispatcher.service_times, gw.config)

    @app.get("/stats", tags=["operations"])
    async def stats(request: Request) -> dict[str, Any]:
        """Per-class latency percentiles and SLO attainment over the sliding window, queue
        depths, tokens in use, the event-loop lag admission keeps in hand, the start-up
        phase (with `startup_error` once failed) and the scheduler's policy and lane
        groups."""
        gw: Gateway = request.app.state.gateway
        summary = gw.stats.summary(gw.dispatcher.clock())
        summary["queue_depth"] = {c: gw.scheduler.queue_depth(c) for c in summary["classes"]}
        summary["tokens_in_use"] = gw.scheduler.tokens_in_use
        # The event loop's recent p95 lag: admission adds it per hop (server/loop_lag.py).
        summary["loop_lag_ms"] = gw.scheduler.hop_s * 1e3
        summary["phase"], summary["startup_error"] = gw.phase, gw.error
        summary["scheduler"] = describe_scheduler(gw.config)
        return summary

    _add_profile_route(app)
    _add_reload_route(app)


def _add_profile_route(app: FastAPI) -> None:
    """GET /v1/profile: the service times the lanes measured, as training rows."""

    @app.get(
        "/v1/profile",
        tags=["operations"],
        summary="Observed service times as a profile CSV",
        response_class=Response,
        responses={
            200: {
                "description": "`mlws profile` columns plus busy_lanes; the header even "
                "with no rows.",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            },
            **error_responses(422),
        },
    )
    async def live_profile(
        request: Request,
        min_repeats: int = Query(
            1, ge=1, description="Leave out rows summarising fewer service times than this."
        ),
    ) -> Response:
        """The service times the lanes measured (calibration runs and every successful
        dispatch, the most recent 1000 per row) as training rows for
        `mlws predictor train --profiles`: one row per model, backend, precision,
        batch size and busy_lanes (other lanes running a dispatch when it started),
        in the columns `mlws profile` writes plus busy_lanes; the memory columns are empty
        (not measured live)."""
        gw: Gateway = request.app.state.gateway
        # Copied here on the loop, which records into it; summarised off the loop,
        # where resolving an "auto" device may import torch or onnxruntime.
        times = gw.dispatcher.service_log.snapshot()
        text = await asyncio.to_thread(_live_profile_csv, gw, times, min_repeats)
        return Response(text, media_type="text/csv")


def _add_reload_route(app: FastAPI) -> None:
    """POST /v1/config/reload: apply the config file's models without a restart."""
    failed = "The file is invalid (nothing changed), or a model's change failed: `report` "
    failed += "says which and why (its old version keeps serving; the others applied)."
    responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ReloadErrorBody, "description": failed},
        **error_responses(409),
    }

    @app.post(
        "/v1/config/reload",
        tags=["operations"],
        response_model=ReloadReport,
        responses=responses,
    )
    async def reload_config(request: Request) -> Any:
        """Read the gateway's config file again (as SIGHUP does) and apply its `models`:
        the ones gone unloaded once their requests finished, new ones loaded, changed
        ones (entry or files) replaced while the old version serves. 409 if the gateway
        was started without a file, or the file changes other keys (named: they need a
        restart; nothing changed). Answers once every change is done."""
        try:
            report: ReloadReport = await request.app.state.reloader.reload()
        except ReloadFailed as exc:
            problem = classify(exc)
            body = ReloadErrorBody(**problem.body.model_dump(), report=exc.report)
            content = body.model_dump(exclude={"admission"})
            return JSONResponse(content, status_code=problem.status)
        return report


def _live_profile_csv(gw: Gateway, times: dict[ServiceKey, list[float]], min_repeats: int) -> str:
    """GET /v1/profile's body: `times` summarised with this gateway's threads and devices."""
    from backends.devices import resolve_device
    from backends.registry import cuda_available

    def device_of(backend: str, precision: str) -> str:
        # The choice the lanes' runners made when they loaded (see backends/*_backend.py).
        return resolve_device(gw.config.device, precision, cuda_available(backend))

    rows = profile_rows(
        times,
        device_of=device_of,
        specs=gw.models.specs(),
        min_repeats=min_repeats,
    )
    return profile_csv(rows)


def describe_model(gw: Gateway, served: ServedModel) -> dict[str, Any]:
    """One model's entry in /v1/models."""
    model, spec = served.config, served.spec
    return {
        "name": model.name,
        "backends": list(model.backends),
        "precisions": list(model.precisions),
        "default_backend": model.default_backend,
        "default_precision": model.default_precision,
        "input_shape": list(spec.input_shape),
        "input_dtype": spec.input_dtype,
        "output_shape": list(spec.output_shape),
        # Per precision: tokens (MiB) a dispatch holds, and whether a profile measured them.
        "token_cost": {p: _cost(gw.scheduler.costs.cost(model.name, p)) for p in model.precisions},
        "max_dispatch_samples": {
            p: gw.scheduler.largest_dispatch(model.name, p) for p in model.precisions
        },
        "loaded": gw.pool.ready,
    }


def _cost(cost: TokenCost) -> dict[str, Any]:
    """A token cost as /v1/models shows it: base + per_sample × samples MiB, and its source
    ("table": hand-set; "profile <file>": measured by `mlws profile`)."""
    return {"base_mb": cost.base, "per_sample_mb": cost.per_sample, "source": cost.source}
