"""The Open Inference Protocol's model repository extension over HTTP, as Triton speaks it.

| route                                       | answer                                      |
|---------------------------------------------|---------------------------------------------|
| POST /v2/repository/index                   | `[{name, version, state, reason}]`          |
| POST /v2/repository/models/{name}/load      | 200 once the model serves; 400 and why not  |
| POST /v2/repository/models/{name}/unload    | 200 once its requests finished and it left  |

Added to the /v2 router by server/kserve.py, before its catch-all. The index body
is optional: `{"ready": true}` lists only READY models. A load's body is optional
too: `{"parameters": {"config": "<JSON string>"}}` with this project's model keys
(backends, precisions, weights, onnx_file, flops_per_sample); without one, a model of
the gateway's config (or an in-tree model by its name) is loaded as configured.
States: READY, LOADING, UNLOADING, UNAVAILABLE (the reason says why: unloaded, or the
error of its failed load). Files travel by path only (inside `model_dir`): a load that
uploads files (`parameters` keys `file:...`) is refused. Errors answer in the
protocol's form, `{"error": "<message>"}`. The work is server/model_repository.py's;
server/grpc_v2/repository.py answers the same over gRPC.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.api_responses import V2ErrorBody, empty_response, error_responses
from server.model_repository import RepositoryRefused

if TYPE_CHECKING:
    from server.model_repository import ModelRepository

#: Bodies larger than this are refused: a repository call carries a small JSON config.
MAX_BODY_BYTES = 64 * 1024


def add_repository_routes(router: APIRouter) -> None:
    """Add the repository routes to the /v2 router (server/kserve.py: its route class
    answers errors in the protocol's form; state: app.state.repository)."""
    refused = error_responses(400, 404, 503, model=V2ErrorBody)
    done = {"response_class": Response, "responses": {200: empty_response("Done.")} | refused}

    @router.post("/repository/index", responses=error_responses(400, model=V2ErrorBody))
    async def index(request: Request) -> list[dict[str, str]]:
        """Every model the gateway serves or has known, with its state."""
        body = await _body(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise RepositoryRefused("ready must be true or false", field="ready")
        return [s.as_dict() for s in _repository(request).index(ready)]

    @router.post("/repository/models/{name}/load", **done)
    async def load(request: Request, name: str) -> Response:
        """Load (or replace) a model; answers once every lane has loaded and warmed it."""
        body = await _body(request)
        await _repository(request).load(name, load_config(body.get("parameters", {})))
        return Response(status_code=200)

    @router.post("/repository/models/{name}/unload", **done)
    async def unload(request: Request, name: str) -> Response:
        """Refuse the model's new requests, let its queued and running ones finish, then
        unload it from every lane."""
        await _body(request)  # parameters (unload_dependents) have nothing to act on here
        await _repository(request).unload(name)
        return Response(status_code=200)


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object of the body; {} for none."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise RepositoryRefused(f"body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RepositoryRefused(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RepositoryRefused("body must be a JSON object")
    return body


def load_config(parameters: object) -> str | None:
    """The config a load's `parameters` carry (a JSON string), None if none; uploads
    (`file:...` keys) refused. HTTP's body and gRPC's request (server/grpc_v2) both
    carry them."""
    if not isinstance(parameters, dict):
        raise RepositoryRefused("parameters must be a JSON object", field="parameters")
    uploads = sorted(k for k in parameters if k.startswith("file:"))
    if uploads:
        raise RepositoryRefused(
            f"files cannot be uploaded ({', '.join(uploads)}): name a file inside the "
            "model directory in the config's onnx_file",
            field="parameters",
        )
    config = parameters.get("config")
    if config is not None and not isinstance(config, str):
        raise RepositoryRefused(
            "parameters.config must be a string (the config as JSON)", field="config"
        )
    return config
