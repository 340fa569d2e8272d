"""The parts of the OpenAPI schema that depend on this gateway's config.

The schema is a contract: what it accepts the server must accept, and what the
server refuses the schema must refuse. Some bounds are the config's, not the
code's, so they are written into the schema when it is built:

- `batch_size` at most `max_request_samples` (the code's own cap, 4096, is
  looser than any config's), and exactly one of `inputs` and `batch_size`;
- `model` (and a v2 route's `{name}`, `{version}`): the served ones, so that a
  client (or a fuzzer) can tell a name from a 404;
- `backend` and `precision`: the ones some served model runs on;
- the v2 inference body: the protocol's request object (`V2Request`);
- with access control on, the bearer scheme, and on every route that needs a
  token, that it does and may answer 401 and 403.

Rules no JSON Schema can state stay the server's: a tensor's bytes must match its
shape and the model's input, and a backend or precision must be one *its model*
runs on. Those are 413 or 422 answers naming the field, and documented as such.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from server.api_responses import error_responses
from server.auth import OPEN, ROUTE_ROLES, UNLISTED
from server.codecs import OCTET_STREAM
from server.config import GatewayConfig
from server.kserve_codec import MODEL_VERSION, V2Request
from server.schemas import MAX_BATCH_SIZE

REF = "#/components/schemas/{model}"
#: The security scheme's name in the schema (Swagger UI's "Authorize" shows it).
BEARER = "bearer"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document_contract(app: FastAPI, config: GatewayConfig) -> None:
    """Make `app.openapi()` return the schema with `config`'s bounds written in."""
    base: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:  # built, and documented, by an earlier call
            return app.openapi_schema
        schema = base()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _bound_infer_request(components["InferRequest"], config)
        _document_v2_bodies(schema, components)
        _name_models(schema, [m.name for m in config.models])
        if config.auth.enabled:
            _document_auth(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bound_infer_request(body: dict[str, Any], config: GatewayConfig) -> None:
    properties = body["properties"]
    _non_null(properties["batch_size"])["maximum"] = min(MAX_BATCH_SIZE, config.max_request_samples)
    backends = sorted({b for m in config.models for b in m.backends})
    precisions = sorted({p for m in config.models for p in m.precisions})
    _non_null(properties["backend"])["enum"] = backends
    _non_null(properties["precision"])["enum"] = precisions
    body["oneOf"] = _one_source(_non_null(properties["batch_size"]))


def _one_source(batch_size: dict[str, Any]) -> list[dict[str, Any]]:
    """Exactly one source of input: a non-null `inputs` or `batch_size`, the other one
    absent or null (a null counts as absent). Each branch repeats the bounds it relies
    on, so that a generator reading one branch alone stays within them."""
    tensor = {"type": ["object", "array"]}
    return [
        {"required": ["inputs"], "properties": {"inputs": tensor, "batch_size": {"type": "null"}}},
        {
            "required": ["batch_size"],
            "properties": {"batch_size": batch_size, "inputs": {"type": "null"}},
        },
    ]


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null member of an `X | None` property's anyOf."""
    return next(s for s in prop["anyOf"] if s.get("type") != "null")


def _document_v2_bodies(schema: dict[str, Any], components: dict[str, Any]) -> None:
    body = V2Request.model_json_schema(ref_template=REF)
    components.update(body.pop("$defs", {}))
    components["V2Request"] = body
    for path, item in schema["paths"].items():
        if path.startswith("/v2/") and path.endswith("/infer"):
            content = item["post"]["requestBody"]["content"]
            content["application/json"] = {"schema": {"$ref": REF.format(model="V2Request")}}
            # The binary extension: a JSON header of Inference-Header-Content-Length bytes,
            # then the raw tensor bytes.
            content[OCTET_STREAM] = {"schema": {"type": "string", "format": "binary"}}


def _name_models(schema: dict[str, Any], names: list[str]) -> None:
    """`model` and the v2 path parameters: the served models and their one version."""
    schema["components"]["schemas"]["InferRequest"]["properties"]["model"]["enum"] = names
    for item in schema["paths"].values():
        for method in HTTP_METHODS:
            for param in item.get(method, {}).get("parameters", []):
                if param["in"] == "path" and param["name"] in ("name", "version"):
                    param["schema"]["enum"] = names if param["name"] == "name" else [MODEL_VERSION]


def _document_auth(schema: dict[str, Any]) -> None:
    """The bearer scheme, and on every operation whose route needs a role
    (server/auth.py) that it needs it and may answer 401 and 403."""
    refusals = error_responses(401, 403)
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes[BEARER] = {"type": "http", "scheme": "bearer"}
    for path, item in schema["paths"].items():
        if ROUTE_ROLES.get(path, UNLISTED) == OPEN:
            continue
        for method in HTTP_METHODS:
            if method in item:
                item[method]["security"] = [{BEARER: []}]
                responses = item[method].setdefault("responses", {})
                for status, doc in refusals.items():
                    responses.setdefault(str(status), _json_error(path, doc["description"]))


def _json_error(path: str, description: str) -> dict[str, Any]:
    # /v2 routes refuse in the protocol's form, like their other errors.
    model = "V2ErrorBody" if path.startswith("/v2") else "ErrorBody"
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }
