"""Open Inference Protocol (KServe v2) over HTTP, beside POST /infer.

`add_kserve_routes(app)` adds, with or without ``/versions/1`` after the model:

| route                           | answer                                              |
|---------------------------------|-----------------------------------------------------|
| GET  /v2                        | server metadata: name, version, extensions          |
| GET  /v2/health/live            | 200, empty body                                     |
| GET  /v2/health/ready           | 200 when /readyz is; else 400 ("4xx means false")   |
| GET  /v2/models/{name}          | model metadata: versions, platform, inputs, outputs |
| GET  /v2/models/{name}/ready    | 200 / 400 (also loading); 404 for an unknown model  |
| GET  /v2/models/{name}/config   | Triton's model configuration (kserve_config.py)     |
| POST /v2/models/{name}/infer    | inference                                           |
| POST /v2/repository/...         | load / unload models (server/repository.py)         |

Every model has one input ``input`` (FP32, [-1, *sample shape]) and one output
``output`` (FP32 logits, [-1, *output shape]). Input data comes as JSON
(``data``: a flat or nested list) or with the binary extension: the
``Inference-Header-Content-Length`` header gives the JSON header's size, raw
little-endian bytes follow it, and the input says how many in
``parameters.binary_data_size``. An output is binary when its request says
``parameters.binary_data: true``, else when the request's
``parameters.binary_data_output`` is true (also the default when no output is
named, as tritonclient sends it); the answer then carries the same header.
``parameters.classification: k`` on the output returns Triton's BYTES tensor
[N, k] of ``"value:index"`` strings instead (value: the raw logit).

Request ``parameters`` choose the class and the SLO (first rule that applies):

1. ``class``: "interactive" or "batch".
2. ``priority`` in Triton's convention: 1, the highest level, is interactive;
   2 and above are batch; 0 means "the model's default" and falls through.
   The words "high"/"interactive" and "low"/"batch" are accepted too.
3. The batch size: one sample is interactive (someone is waiting on a single
   image), more are batch (throughput work).

The budget is ``slo_ms`` (milliseconds), else ``timeout`` in microseconds
(Triton's unit; 0 means none), else the class default. ``backend`` and
``precision`` pick the runner as on POST /infer.

Tensor decoding and encoding live in server/kserve_codec.py. Inference goes
through the request core (server/request_core.py, by way of
`server.infer.serve_http`): the same admission, body limit, validation,
scheduling and outcome errors as POST /infer. Errors keep the status
`server.errors.classify` chooses; only the body takes the protocol's form,
``{"error": "<message>"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from backends.registry import triton_names
from server.api_responses import (
    V2_GUARD_RESPONSES,
    V2ErrorBody,
    empty_response,
    error_responses,
)
from server.codecs import OCTET_STREAM
from server.echo import clip, echo
from server.errors import Unavailable, UnknownModel, classify
from server.infer import (
    INLINE_DECODE_BYTES,
    INLINE_ENCODE_ELEMENTS,
    refuse_content_encoding,
    serve_http,
)
from server.json_budget import json_value_limit
from server.kserve_codec import (
    HEADER_LENGTH,
    INPUT_NAME,
    MODEL_VERSION,
    OUTPUT_NAME,
    V2Decoded,
    decode_v2,
    encode_v2,
)
from server.kserve_config import add_config_routes
from server.offload import off_loop_if
from server.repository import add_repository_routes

if TYPE_CHECKING:
    from server.gateway import Gateway

EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]


def v2_error(exc: BaseException, retry_after_s: int = 1) -> JSONResponse:
    """The status `classify` chooses for `exc`, with the protocol's error body."""
    problem = classify(exc, retry_after_s)
    return JSONResponse(
        {"error": problem.detail}, status_code=problem.status, headers=problem.headers or None
    )


class V2Route(APIRoute):
    """A route whose every error, request validation included, answers in the v2 form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # mapped, not swallowed: error_response logs 5xx
                gw = getattr(request.app.state, "gateway", None)
                return v2_error(exc, gw.config.retry_after_s if gw is not None else 1)

        return handle


def model_metadata(gw: Gateway, name: str) -> dict[str, Any]:
    """GET /v2/models/{name}: the model's tensors, the batch axis as -1."""
    served = gw.models.require(name)
    model, spec = served.config, served.spec
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": triton_names(model.default_backend)[0],
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *spec.input_shape]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, *spec.output_shape]}],
    }


def _check_version(name: str, version: str) -> None:
    if version != MODEL_VERSION:
        raise UnknownModel(
            f"model {echo(name)} has no version {echo(version)}; versions: {MODEL_VERSION}"
        )


async def _infer(request: Request, name: str) -> Response:
    gw: Gateway = request.app.state.gateway
    header_length = request.headers.get(HEADER_LENGTH)

    async def parse(body: bytes) -> V2Decoded:
        refuse_content_encoding(request)
        big = len(body) > INLINE_DECODE_BYTES
        return await off_loop_if(big, decode_v2, gw, name, body, header_length)

    # An all-JSON body is bounded while it is read; a binary one's JSON header on decoding.
    served = gw.models.get(name)
    json_limit = (
        None
        if header_length is not None or served is None
        else json_value_limit(gw.config, [served.spec])
    )
    done = await serve_http(request, gw, parse, json_limit)
    if done is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    big = done[1].outputs.size > INLINE_ENCODE_ELEMENTS
    body, json_size = await off_loop_if(big, encode_v2, *done)
    if json_size is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type=OCTET_STREAM, headers={HEADER_LENGTH: str(json_size)})


#: Documented answers of the /v2 routes, beside the guard's (V2_GUARD_RESPONSES).
MISSING = error_responses(404, model=V2ErrorBody)
# The protocol's health answers are a status alone: no body, no Content-Type.
UP = {200: empty_response("Yes.")}
NOT_READY = {400: empty_response("Not ready (the protocol's 4xx means false).")}
REFUSED = error_responses(400, 404, 413, 415, 422, 429, model=V2ErrorBody)
#: The inference body's media types (their schemas: server/openapi_contract.py).
BODY_DOC = {"content": {"application/json": {}, OCTET_STREAM: {}}, "required": True}


def build_router() -> APIRouter:
    """The /v2 routes (no state: everything is read from app.state.gateway per request)."""
    router = APIRouter(
        prefix="/v2", tags=["kserve v2"], route_class=V2Route, responses=V2_GUARD_RESPONSES
    )

    @router.get("")
    async def server_metadata(request: Request) -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return {"name": "mlws", "version": request.app.version, "extensions": EXTENSIONS}

    @router.get("/health/live", response_class=Response, responses=UP)
    async def live() -> Response:
        """200 while the process serves HTTP."""
        return Response(status_code=200)

    @router.get("/health/ready", response_class=Response, responses=UP | NOT_READY)
    async def ready(request: Request) -> Response:
        """200 when every model is loaded and warmed (as /readyz), else 400."""
        return Response(status_code=200 if request.app.state.gateway.ready else 400)

    @router.get("/models/{name}", responses=MISSING)
    async def metadata(request: Request, name: str) -> dict[str, Any]:
        """Model metadata: versions, platform, input and output tensors."""
        return model_metadata(request.app.state.gateway, name)

    @router.get("/models/{name}/ready", response_class=Response, responses=UP | NOT_READY | MISSING)
    async def model_ready(request: Request, name: str) -> Response:
        """200 when the model is served and the gateway ready, 400 if not ready yet."""
        return _model_ready(request, name)

    @router.post("/models/{name}/infer", openapi_extra={"requestBody": BODY_DOC}, responses=REFUSED)
    async def infer(request: Request, name: str) -> Response:
        """Inference: JSON tensors, or the binary extension (Inference-Header-Content-Length)."""
        return await _infer(request, name)

    _add_versioned_routes(router)
    add_config_routes(router, _check_version)  # Triton's GET .../config (perf_analyzer)
    add_repository_routes(router)  # load and unload models (server/repository.py)
    _add_catch_all(router)  # last: it must not shadow the routes above
    return router


def _model_ready(request: Request, name: str) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        gw.models.require(name)
    except Unavailable:  # loading or unloading (server/model_repository.py): not ready
        return Response(status_code=400)
    return Response(status_code=200 if gw.ready else 400)


def _add_versioned_routes(router: APIRouter) -> None:
    """The model routes again at /versions/{version}: only version 1 exists."""

    @router.get("/models/{name}/versions/{version}", responses=MISSING)
    async def metadata_at(request: Request, name: str, version: str) -> dict[str, Any]:
        """Model metadata of one version."""
        _check_version(name, version)
        return model_metadata(request.app.state.gateway, name)

    @router.get(
        "/models/{name}/versions/{version}/ready",
        response_class=Response,
        responses=UP | NOT_READY | MISSING,
    )
    async def model_ready_at(request: Request, name: str, version: str) -> Response:
        """Readiness of one version."""
        _check_version(name, version)
        return _model_ready(request, name)

    @router.post(
        "/models/{name}/versions/{version}/infer",
        openapi_extra={"requestBody": BODY_DOC},
        responses=REFUSED,
    )
    async def infer_at(request: Request, name: str, version: str) -> Response:
        """Inference on one version."""
        _check_version(name, version)
        return await _infer(request, name)


def _add_catch_all(router: APIRouter) -> None:
    @router.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def unsupported(request: Request, rest: str) -> Response:
        """Any other /v2 path (repository, shared memory, ...): a 404 the client can read;
        a method another /v2 route takes at this path: 405 with the methods it does."""
        allowed = methods_at(router.routes, request.url.path)
        if allowed:
            raise StarletteHTTPException(405, headers={"Allow": ", ".join(allowed)})
        detail = f"{request.method} /v2/{clip(rest, 60)} is not part of this server's v2 API"
        raise StarletteHTTPException(404, detail)


def methods_at(routes: Sequence[BaseRoute], path: str) -> list[str]:
    """The methods `routes` (other than the catch-all) take at `path`."""
    methods: set[str] = set()
    for route in routes:
        catch_all = "{rest:path}" in getattr(route, "path", "")
        if isinstance(route, APIRoute) and not catch_all and route.path_regex.fullmatch(path):
            methods |= route.methods
    return sorted(methods)


def add_kserve_routes(app: FastAPI) -> None:
    """Serve the Open Inference Protocol's HTTP routes on `app` (state: app.state.gateway)."""
    app.include_router(build_router())
