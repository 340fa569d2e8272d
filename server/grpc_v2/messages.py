"""The protocol's message classes and RPC signatures, from the generated descriptors.

protos.binpb is the descriptor set grpcio-tools' protoc generates from
grpc_predict_v2.proto and triton_extras.proto. The classes are built here in a
descriptor pool of this module's own, not from generated ``*_pb2`` modules: those
register their messages in protobuf's process-wide default pool, where Triton's client
(tritonclient.grpc) registers the same ``inference.*`` names, and protobuf refuses a name
registered twice, so the gateway and Triton's client could not share a process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

HERE = Path(__file__).resolve().parent
#: The protos, in the order protoc is given them.
PROTOS: tuple[str, ...] = ("grpc_predict_v2.proto", "triton_extras.proto")
DESCRIPTOR_SET = HERE / "protos.binpb"
#: The service every RPC is served under: KServe's, which Triton's clients call too.
SERVICE = "inference.GRPCInferenceService"
#: Where triton_extras.proto's messages and its service live in the pool.
TRITON_PACKAGE = "inference.triton"
#: An RPC's implementation: (request, context) → response.
Rpc = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


def _load_pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


POOL = _load_pool()


def message_class(full_name: str) -> type[Message]:
    """The class of the message `full_name` (e.g. "inference.ModelInferRequest")."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


@dataclass(frozen=True)
class Method:
    """One RPC: its name and the classes of its request and response."""

    name: str
    request: type[Message]
    response: type[Message]


def methods() -> tuple[Method, ...]:
    """Every RPC served under SERVICE: KServe's, then Triton's additions."""
    found = []
    for service in (SERVICE, f"{TRITON_PACKAGE}.GRPCInferenceService"):
        for method in POOL.FindServiceByName(service).methods:
            found.append(
                Method(
                    method.name,
                    message_factory.GetMessageClass(method.input_type),
                    message_factory.GetMessageClass(method.output_type),
                )
            )
    return tuple(found)


# The messages the adapter builds or reads by name.
InferParameter = message_class("inference.InferParameter")
#: Triton's InferParameter: KServe's plus double_param (4) and uint64_param (5).
WideInferParameter = message_class(f"{TRITON_PACKAGE}.InferParameter")
ModelInferRequest = message_class("inference.ModelInferRequest")
ModelInferResponse = message_class("inference.ModelInferResponse")
