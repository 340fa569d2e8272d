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
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from server.api_responses import GUARD_RESPONSES, error_responses
from server.auth import install_auth
from server.codecs import OCTET_STREAM
from server.config import ConfigFile, GatewayConfig
from server.config_reload import ConfigReloader
from server.docs_ui import add_offline_docs
from server.errors import install_error_handlers
from server.gateway import Gateway, build_gateway
from server.grpc_v2.endpoint import start_grpc
from server.infer import BINARY_OPTIONS, handle_infer
from server.kserve import add_kserve_routes
from server.model_repository import ModelRepository
from server.openapi_contract import document_contract
from server.operations import add_operations_routes, describe_model
from server.scheduler_info import describe_scheduler
from server.schemas import InferRequest, InferResponse
from server.startup import load, readiness_response

log = logging.getLogger("mlws.server")


def create_app(
    config: GatewayConfig | None = None, config_file: ConfigFile | None = None
) -> FastAPI:
    """The gateway as an ASGI app; its state is built and closed in the lifespan.
    `config_file`: the file `config` was read from, read again by a reload (none: the
    embedded default or a config built in code, which a reload refuses)."""
    config = config or GatewayConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = build_gateway(config)
        app.state.gateway = gw
        app.state.repository = ModelRepository(gw)  # models loaded and unloaded at run time
        # SIGHUP and POST /v1/config/reload apply the file's models again.
        app.state.reloader = ConfigReloader(gw, app.state.repository, config_file)
        # KServe v2 over gRPC on this loop, with the same model repository.
        app.state.grpc = await start_grpc(gw, app.version, app.state.repository)
        gw.dispatcher.start()
        gw.loader = asyncio.create_task(load(gw), name="mlws-loader")
        try:
            yield
        finally:
            log.info("stopping: answering what is left, stopping lanes")
            # gRPC takes no new calls; its running ones end as the dispatcher answers them.
            grpc_stopped = app.state.grpc.stop(config.drain_timeout_s)
            await asyncio.gather(grpc_stopped, gw.dispatcher.close())
            gw.loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gw.loader
            if gw.cluster is not None:
                await gw.cluster.close()
            await gw.pool.close()
            if gw.cluster is not None:
                gw.cluster.disconnect()
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
    add_operations_routes(app)


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
        """Served models: backends, precisions, token costs (per precision: base_mb,
        per_sample_mb, source: "table" or "profile <file>"), shapes; and the scheduler
        (policy and lane groups) that runs them."""
        gw: Gateway = request.app.state.gateway
        return {
            "models": [describe_model(gw, m) for m in gw.models],
            "scheduler": describe_scheduler(gw.config),
            "grpc_port": request.app.state.grpc.port,  # None: no gRPC
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
