"""The gRPC server of one gateway: grpc.aio on the event loop uvicorn runs.

`start_grpc(gw, version, repository)` binds ``grpc_port`` on the gateway's host
(0: a free port; None: no gRPC) and serves every RPC of both protos under
inference.GRPCInferenceService; the returned `GrpcEndpoint` says the bound port
and stops the server. The app's lifespan starts it after the gateway is built and
stops it before the dispatcher closes, so its calls share the gateway's admission,
drain and shutdown with HTTP.

Messages are bounded by max_body_mb both ways, as HTTP bodies are. The port is
bound exclusively (no SO_REUSEPORT, which gRPC sets by default): a second gateway
on the same port fails to start instead of silently sharing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from server.auth import load_tokens
from server.grpc_v2.access import TokenCheck
from server.grpc_v2.messages import SERVICE, methods
from server.grpc_v2.rpcs import Rpcs

if TYPE_CHECKING:
    from server.gateway import Gateway
    from server.model_repository import ModelRepository

log = logging.getLogger("mlws.server")


@dataclass
class GrpcEndpoint:
    """A started gRPC server (or none, when the config turns gRPC off)."""

    server: grpc.aio.Server | None = None
    #: The bound port; None: gRPC is off.
    port: int | None = None

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give running ones `grace_s` to finish, then cancel them."""
        if self.server is not None:
            await self.server.stop(grace_s)
            log.info("gRPC stopped")


def address(host: str, port: int) -> str:
    """host:port as gRPC takes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def build_server(gw: Gateway, version: str, repository: ModelRepository) -> grpc.aio.Server:
    """The gRPC server with every RPC and, when tokens are configured, their check."""
    limit = gw.config.max_body_bytes
    interceptors = []
    if gw.config.auth.enabled:
        interceptors.append(TokenCheck(load_tokens(gw.config.auth), gw.metrics))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    table = Rpcs(gw, version, repository).table()
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            table[m.name],
            request_deserializer=m.request.FromString,
            response_serializer=m.response.SerializeToString,
        )
        for m in methods()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server


async def start_grpc(gw: Gateway, version: str, repository: ModelRepository) -> GrpcEndpoint:
    """Serve gRPC for `gw` (its model repository: `repository`, the HTTP routes') on its
    configured port; an endpoint without a server if None.

    Raises RuntimeError naming the address when the port cannot be bound.
    """
    port = gw.config.grpc_port
    if port is None:
        return GrpcEndpoint()
    server = build_server(gw, version, repository)
    where = address(gw.config.host, port)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {where} (grpc_port): {exc}") from None
    if not bound:  # older gRPC releases report a failed bind as port 0
        raise RuntimeError(f"gRPC cannot listen on {where} (grpc_port)")
    await server.start()
    log.info("gRPC (KServe v2) on %s", address(gw.config.host, bound))
    return GrpcEndpoint(server, bound)
