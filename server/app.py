"""The HTTP gateway: `create_app(config)` builds a FastAPI app around one Dispatcher.

All state lives on `app.state.gateway`, built in the lifespan and torn down
there; nothing is global. Startup returns at once: ONNX export and model loading
run in a background task, so /healthz answers during them and /readyz turns 200
when every lane has loaded and warmed every configured model; a step that fails
ends start-up as `failed`, its one-line reason on /readyz (server/startup.py).

POST /infer (server/infer.py) takes either a JSON body (`InferRequest`) or a
binary tensor body (`application/octet-stream` with X-Shape/X-Dtype, or
`application/x-npy`) whose options come from query parameters or X-Model/
X-Class/... headers; the OpenAPI schema documents both forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from scheduling.scheduler import Scheduler
from scheduling.tokens import FP16_FACTOR, TOKENS_PER_SAMPLE
from server.api_responses import GUARD_RESPONSES, PROMETHEUS_TEXT, error_responses
from server.auth import install_auth
from server.codecs import OCTET_STREAM
from server.config import GatewayConfig, ModelConfig
from server.dispatcher import Dispatcher
from server.docs_ui import add_offline_docs
from server.errors import install_error_handlers
from server.infer import BINARY_OPTIONS, handle_infer
from server.kserve import add_kserve_routes
from server.lanes import LaneBatch, LanePool, build_pool, dispatch_cap, export_models
from server.metrics import GatewayMetrics
from server.openapi_contract import document_contract
from server.scheduler_info import describe_scheduler
from server.schemas import InferRequest, InferResponse
from server.service_checks import check_service_models
from server.service_log import ServiceKey, profile_csv, profile_rows
from server.service_times import describe, load_service_models
from server.startup import StartupError, failure_line, log_failure, readiness_response
from server.stats import SlidingWindowStats
from server.watchdog import Watchdog
from workloads.specs import WorkloadSpec

log = logging.getLogger("mlws.server")


@dataclass
class Gateway:
    """One running gateway's state (app.state.gateway)."""

    config: GatewayConfig
    specs: dict[str, WorkloadSpec]
    scheduler: Scheduler
    pool: LanePool
    dispatcher: Dispatcher
    metrics: GatewayMetrics
    stats: SlidingWindowStats
    #: starting → checking → exporting → loading → calibrating → ready (or failed).
    phase: str = "starting"
    #: Why start-up failed (phase "failed"): one line, shown by /readyz and /stats.
    error: str | None = None
    loader: asyncio.Task[None] | None = None
    ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def ready(self) -> bool:
        """Every lane loaded and warmed, and not shutting down."""
        return self.phase == "ready" and self.pool.ready and not self.dispatcher.draining

    @property
    def accepting(self) -> bool:
        """Whether /infer takes requests: started up and not shutting down.

        A lane restarting after a worker crash does not stop admission: its
        dispatches wait for the new worker, the other lanes keep serving.
        """
        return self.phase == "ready" and not self.dispatcher.draining

    def not_ready_reason(self) -> str:
        """Why /readyz is 503."""
        if self.dispatcher.draining:
            return "server is shutting down"
        if self.phase == "failed":
            return self.error or "start-up failed"
        if self.phase == "ready":
            down = [str(lane.index) for lane in self.pool.lanes if not lane.ready]
            return f"lane(s) {', '.join(down)} restarting"
        return f"not ready: {self.phase} models"

    def begin_drain(self) -> None:
        """Shutdown has begun (uvicorn got SIGTERM): drain within drain_timeout_s."""
        self.dispatcher.begin_drain(self.config.drain_timeout_s)


def register_models(config: GatewayConfig) -> dict[str, WorkloadSpec]:
    """Register user ONNX files and return the spec of every configured model."""
    from workloads.registry import get_workload, register_onnx_file

    specs = {}
    for model in config.models:
        if model.onnx_file is not None:
            register_onnx_file(model.onnx_file, model.name, flops_per_sample=model.flops_per_sample)
        specs[model.name] = get_workload(model.name).spec
    return specs


def unregister_models(config: GatewayConfig) -> None:
    """Undo `register_models`: the workload catalogue is process-wide."""
    from workloads.registry import unregister_onnx_file

    for model in config.models:
        if model.onnx_file is not None:
            with contextlib.suppress(KeyError):
                unregister_onnx_file(model.name)


def build_gateway(config: GatewayConfig) -> Gateway:
    """Every component of one gateway, not started."""
    specs = register_models(config)
    metrics = GatewayMetrics()
    for name in specs:
        metrics.register_model(name)
    stats = SlidingWindowStats(config.stats_window_s)
    service = load_service_models(config)
    scheduler = Scheduler(config.scheduler, {n: s.token_base for n, s in specs.items()}, service)
    pool = build_pool(config, specs)
    threads = [lane.spec.threads for lane in pool.lanes]
    watchdog = Watchdog(config.lanes.watchdog_min_s, config.lanes.watchdog_factor)
    dispatcher = Dispatcher(
        scheduler, pool, metrics, stats, service, lane_threads=threads, watchdog=watchdog
    )
    return Gateway(config, specs, scheduler, pool, dispatcher, metrics, stats)


async def _load(gw: Gateway) -> None:
    """Background startup; any step's error ends it as `failed` with a one-line reason
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
    check_service_models(gw.config, gw.specs, gw.dispatcher.service_models)
    gw.phase = "exporting"
    await asyncio.to_thread(export_models, gw.config)
    gw.phase = "loading"
    await gw.pool.start()
    if gw.pool.error:
        raise StartupError(gw.pool.error)
    gw.phase = "calibrating"
    await _calibrate(gw)
    gw.phase = "ready"
    log.info("ready: %d lane(s), models %s", len(gw.pool.lanes), ", ".join(gw.specs))


#: Timed runs per (model, backend, precision, size) before the gateway turns ready.
CALIBRATION_RUNS = 3


async def _calibrate(gw: Gateway) -> None:
    """Seed each lane group's service-time model with timed runs at batch 1 and the
    largest dispatch, on the group's first lane.

    Without it the scheduler knows no service times until traffic arrives: the
    first long batch dispatches would ignore max_dispatch_ms and admission would
    admit everything.
    """
    first = 0
    for group in gw.config.scheduler.groups():
        lane, first = first, first + group.count
        threads = gw.pool.lanes[lane].spec.threads
        for model in gw.config.models:
            spec = gw.specs[model.name]
            for backend in model.backends:
                for precision in model.precisions:
                    cap = dispatch_cap(gw.config.scheduler, spec.token_base, precision)
                    key = (model.name, backend, precision)
                    for n in sorted({1, cap}):
                        await _calibrate_size(gw, group.name, lane, threads, key, n)


async def _calibrate_size(
    gw: Gateway, group: str, lane: int, threads: int, key: tuple[str, str, str], n: int
) -> None:
    """Timed runs of `key` at batch `n` on `lane`, learned and logged (start-up takes a while:
    the log says where it is)."""
    started = time.monotonic()
    total = 0.0
    for _ in range(CALIBRATION_RUNS):
        result = await gw.pool.run(lane, LaneBatch(-1, key, [(None, 0, n)]))
        gw.dispatcher.learn(group, key, n, result.service_s)
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


def create_app(config: GatewayConfig | None = None) -> FastAPI:
    """The gateway as an ASGI app; its state is built and closed in the lifespan."""
    config = config or GatewayConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = build_gateway(config)
        app.state.gateway = gw
        gw.dispatcher.start()
        gw.loader = asyncio.create_task(_load(gw), name="mlws-loader")
        try:
            yield
        finally:
            log.info("stopping: answering what is left, stopping lanes")
            await gw.dispatcher.close()
            gw.loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gw.loader
            await gw.pool.close()
            unregister_models(config)
            log.info("stopped")

    app = FastAPI(
        title="mlws gateway",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        responses=GUARD_RESPONSES,
        docs_url=None,  # served from installed files by add_offline_docs: no CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    install_error_handlers(app, config.retry_after_s)
    install_auth(app, config)  # tokens are read here: a missing one stops the start
    _add_routes(app)
    add_kserve_routes(app)  # the Open Inference Protocol (KServe v2) beside /infer
    _document_infer_body(app)
    document_contract(app, config)  # the config's bounds, over the body's schema
    return app


API_DESCRIPTION = """SLO-aware inference gateway.

**POST /infer** accepts two body forms:

* `application/json`: an `InferRequest` with `inputs` (base64 float32 `{data, shape,
  dtype}` or nested lists) or `batch_size` (the server synthesizes the input).
* Binary tensors: `application/octet-stream` (raw little-endian float32; headers
  `X-Shape: 32,3,224,224` and optional `X-Dtype: float32`) or `application/x-npy`
  (a `.npy` file). Options go in query parameters `model`, `class`, `backend`,
  `precision`, `slo_ms`, `return`, `top_k`, or in headers `X-Model`, `X-Class`,
  `X-Backend`, `X-Precision`, `X-Slo-Ms`, `X-Return`, `X-Top-K` (a query parameter
  wins over its header).

Errors are an `ErrorBody` `{error, detail, field}` (on /v2 routes the protocol's
`{error}`): 400 malformed JSON, 404 unknown model, 405 a method the route does not
take (with `Allow`), 408/431 too slow or headers too large, 413 body/sample limit,
415 content type or a Content-Encoding (bodies are never compressed), 422 invalid
input, 429 predicted late or queue full (with `Retry-After`), 503 shed / worker
failed / not ready / shutting down. Each operation below lists the ones it answers.
"""


def _add_routes(app: FastAPI) -> None:
    _add_serving_routes(app)
    _add_operations_routes(app)
    _add_profile_route(app)


def _add_serving_routes(app: FastAPI) -> None:
    """Inference, liveness, readiness and the model catalogue."""
    errors = error_responses(400, 404, 413, 415, 422, 429)

    @app.post("/infer", response_model=InferResponse, responses=errors, tags=["inference"])
    async def infer(request: Request) -> Response:
        """Run one request (JSON or binary body) through the scheduler."""
        return await handle_infer(request, request.app.state.gateway)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> dict[str, Any]:
        """The process is alive (always 200)."""
        return {"status": "ok", "phase": request.app.state.gateway.phase}

    @app.get("/readyz", tags=["operations"], responses=error_responses(503))
    async def readyz(request: Request) -> Response:
        """200 once every model is loaded and warmed on every lane, else 503."""
        gw: Gateway = request.app.state.gateway
        if gw.ready:
            return JSONResponse({"ready": True})
        return readiness_response(gw.phase, gw.not_ready_reason(), gw.config.retry_after_s)

    @app.get("/v1/models", tags=["operations"])
    async def models(request: Request) -> dict[str, Any]:
        """Served models: backends, precisions, token costs, shapes; and the scheduler
        (policy and lane groups) that runs them."""
        gw: Gateway = request.app.state.gateway
        return {
            "models": [_describe_model(gw, m) for m in gw.config.models],
            "scheduler": describe_scheduler(gw.config),
        }


def _add_operations_routes(app: FastAPI) -> None:
    """What an operator reads: lanes, metrics, the service-time model, statistics."""

    @app.get("/v1/lanes", tags=["operations"])
    async def lanes(request: Request) -> dict[str, Any]:
        """Per lane: its group, threads and OS priority, kind, worker pid, ready, busy,
        restarts."""
        gw: Gateway = request.app.state.gateway
        return {"lanes": gw.pool.describe(), "ready": gw.pool.ready}

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
        return describe(gw.dispatcher.service_models, gw.config)

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
        in the columns `mlws profile` writes plus busy_lanes; peak_mem_mb is empty
        (not measured live)."""
        gw: Gateway = request.app.state.gateway
        # Copied here on the loop, which records into it; summarised off the loop,
        # where resolving an "auto" device may import torch or onnxruntime.
        times = gw.dispatcher.service_log.snapshot()
        text = await asyncio.to_thread(_live_profile_csv, gw, times, min_repeats)
        return Response(text, media_type="text/csv")


def _live_profile_csv(gw: Gateway, times: dict[ServiceKey, list[float]], min_repeats: int) -> str:
    """GET /v1/profile's body: `times` summarised with this gateway's threads and devices."""
    from backends.devices import ort_cuda_available, resolve_device, torch_cuda_available

    def device_of(backend: str, precision: str) -> str:
        # The choice the lanes' runners made when they loaded (see backends/*_backend.py).
        cuda = ort_cuda_available() if backend == "onnx" else torch_cuda_available()
        return resolve_device(gw.config.device, precision, cuda)

    rows = profile_rows(
        times,
        device_of=device_of,
        specs=gw.specs,
        min_repeats=min_repeats,
    )
    return profile_csv(rows)


def _describe_model(gw: Gateway, model: ModelConfig) -> dict[str, Any]:
    spec = gw.specs[model.name]
    return {
        "name": model.name,
        "backends": list(model.backends),
        "precisions": list(model.precisions),
        "default_backend": model.default_backend,
        "default_precision": model.default_precision,
        "input_shape": list(spec.input_shape),
        "input_dtype": spec.input_dtype,
        "output_shape": list(spec.output_shape),
        "token_cost": {
            "base": spec.token_base,
            "per_sample": TOKENS_PER_SAMPLE,
            "fp16_factor": FP16_FACTOR,
        },
        "max_dispatch_samples": {
            p: dispatch_cap(gw.config.scheduler, spec.token_base, p) for p in model.precisions
        },
        "loaded": gw.pool.ready,
    }


def _document_infer_body(app: FastAPI) -> None:
    """Describe POST /infer's three body forms and binary options in the OpenAPI schema."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base_openapi()
        ref = "#/components/schemas/{model}"
        body = InferRequest.model_json_schema(ref_template=ref, by_alias=True)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["InferRequest"] = body
        binary = {"schema": {"type": "string", "format": "binary"}}
        operation = schema["paths"]["/infer"]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                OCTET_STREAM: binary,
                "application/x-npy": binary,
            },
        }
        operation["parameters"] = _binary_parameters()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _binary_parameters() -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"Binary bodies only (or header {header}).",
            "schema": {"type": "string"},
        }
        for name, header in BINARY_OPTIONS.items()
    ]
    for header, text in (("X-Shape", "e.g. 32,3,224,224"), ("X-Dtype", "float32 only")):
        params.append(
            {
                "name": header,
                "in": "header",
                "required": False,
                "description": f"application/octet-stream bodies: {text}.",
                "schema": {"type": "string"},
            }
        )
    return params
