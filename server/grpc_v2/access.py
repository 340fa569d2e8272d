"""Bearer tokens on gRPC: the HTTP gateway's access control, applied to each RPC.

A call carries its token as ``authorization: Bearer <token>`` metadata (what
tritonclient.grpc sends for ``headers={"authorization": ...}``). Each RPC needs
the roles of its HTTP twin in `server.auth.ROUTE_ROLES` (ServerLive as GET
/v2/health/live, ModelInfer as POST /v2/models/{name}/infer, RepositoryModelLoad as
POST /v2/repository/models/{name}/load, ...), so one table says who may call what
for both protocols: the health RPCs are open exactly when the HTTP health routes
are, and an RPC given no twin needs the operator's role. Refusals are
UNAUTHENTICATED (no or an unknown token) or PERMISSION_DENIED (a token without the
role), counted in mlws_auth_failures_total as HTTP's are. A method the service lacks
is left to gRPC's UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from server.auth import OPEN, UNLISTED, TokenStore, rule_for
from server.errors import Forbidden, GatewayError, Unauthorized
from server.grpc_v2.messages import SERVICE, methods
from server.grpc_v2.status import abort
from server.metrics import GatewayMetrics

#: Each RPC's HTTP twin (a path its route answers), whose roles it needs.
HTTP_TWINS: dict[str, str] = {
    "ServerLive": "/v2/health/live",
    "ServerReady": "/v2/health/ready",
    "ModelReady": "/v2/models/m/ready",
    "ServerMetadata": "/v2",
    "ModelMetadata": "/v2/models/m",
    "ModelConfig": "/v2/models/m/config",
    "ModelInfer": "/v2/models/m/infer",
    "RepositoryIndex": "/v2/repository/index",
    "RepositoryModelLoad": "/v2/repository/models/m/load",
    "RepositoryModelUnload": "/v2/repository/models/m/unload",
}


def roles_needed(method: str) -> frozenset[str]:
    """The roles that may call RPC `method` (its name, e.g. "ModelInfer"); OPEN: anyone.
    An RPC without a twin needs the operator's role (UNLISTED), never nothing."""
    twin = HTTP_TWINS.get(method)
    rule = None if twin is None else rule_for(twin)
    return UNLISTED if rule is None else rule.roles


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> bytes | None:
    """The token of the call's ``authorization: Bearer <token>`` metadata, else None."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value if isinstance(value, str) else value.decode("latin-1")
            scheme, _, token = text.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token.encode()
            return None
    return None


class TokenCheck(grpc.aio.ServerInterceptor):
    """Refuse a call whose RPC needs a role its token lacks, before its handler runs."""

    def __init__(self, store: TokenStore, metrics: GatewayMetrics) -> None:
        self.store = store
        self.metrics = metrics
        prefix = f"/{SERVICE}/"
        self.needs = {prefix + m.name: roles_needed(m.name) for m in methods()}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        needed = self.needs.get(details.method, OPEN)
        if needed:
            refusal = self.refusal(details.method, details.invocation_metadata, needed)
            if refusal is not None:
                return _refuse(refusal)
        return await continuation(details)

    def refusal(
        self, method: str, metadata: Sequence[tuple[str, Any]] | None, needed: frozenset[str]
    ) -> GatewayError | None:
        """None if the call's token has one of `needed`, else the error to end it with."""
        presented = bearer_token(metadata)
        roles = None if presented is None else self.store.roles_of(presented)
        if roles is not None and roles & needed:
            return None
        exc: GatewayError
        if presented is None:
            reason = "missing_token"
            exc = Unauthorized(
                f"{method} needs a bearer token: send the metadata 'authorization: Bearer <token>'",
                field="authorization",
            )
        elif roles is None:
            reason = "invalid_token"
            exc = Unauthorized("the bearer token is not valid", field="authorization")
        else:
            reason = "wrong_role"
            exc = Forbidden(
                f"{method} needs the role {' or '.join(sorted(needed))}; this token has "
                f"{', '.join(sorted(roles))}",
                field="authorization",
            )
        self.metrics.count_auth_failure(reason)
        return exc


def _refuse(exc: GatewayError) -> grpc.RpcMethodHandler:
    """A handler that ends the call with `exc` without reading its request."""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await abort(context, exc, 1)

    return grpc.unary_unary_rpc_method_handler(refuse)
