"""The gRPC protocol's generated descriptors are what grpcio-tools makes of the protos.

server/grpc_v2/protos.binpb is checked in; this regenerates it into a temporary
folder and compares byte for byte, so an edited proto without a regenerated
descriptor set (or the reverse) fails here. To regenerate:

    python -m grpc_tools.protoc -I server/grpc_v2 \\
        --descriptor_set_out=server/grpc_v2/protos.binpb \\
        grpc_predict_v2.proto triton_extras.proto
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.descriptor_pool import Default
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2, service_pb2

from server.grpc_v2.messages import (
    DESCRIPTOR_SET,
    HERE,
    POOL,
    PROTOS,
    SERVICE,
    TRITON_PACKAGE,
    methods,
)

#: Triton's own messages, as tritonclient.grpc's generated modules register them.
default_pool = Default()
assert model_config_pb2.DESCRIPTOR.package == service_pb2.DESCRIPTOR.package == "inference"


def test_descriptor_set_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "protos.binpb"
    argv = ["grpc_tools.protoc", f"-I{HERE}", f"--descriptor_set_out={out}", *PROTOS]
    assert protoc.main(argv) == 0
    assert out.read_bytes() == DESCRIPTOR_SET.read_bytes(), (
        "server/grpc_v2/protos.binpb is stale: regenerate it (see this test's docstring)"
    )


def test_every_rpc_triton_clients_call_is_served() -> None:
    """KServe's six RPCs and Triton's ModelConfig and repository RPCs, under the service
    name on the wire."""
    assert SERVICE == "inference.GRPCInferenceService"
    assert {m.name for m in methods()} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }


def _shape(message: Any, package: str) -> list[tuple[Any, ...]]:
    """Each field of `message` as the wire sees it: number, name, type, repeated, and the
    name of its message or enum type without the package."""
    return [
        (
            f.number,
            f.name,
            f.type,
            f.is_repeated,
            (f.message_type or f.enum_type).full_name.removeprefix(package)
            if f.message_type or f.enum_type
            else None,
            f.containing_oneof.name if f.containing_oneof else None,
        )
        for f in message.fields
    ]


def _messages(messages: Any) -> Iterator[Any]:
    for message in messages:
        yield message
        yield from _messages(message.nested_types)


def test_triton_extras_are_wire_compatible_with_tritons_client() -> None:
    """Every message of triton_extras.proto has, field for field, the numbers and types of
    Triton's message of the same name (as tritonclient.grpc's generated code has them)."""
    ours = POOL.FindFileByName("triton_extras.proto")
    for message in _messages(ours.message_types_by_name.values()):
        name = message.full_name.removeprefix(f"{TRITON_PACKAGE}.")
        theirs = default_pool.FindMessageTypeByName(f"inference.{name}")
        expected = {f[1]: f for f in _shape(theirs, "inference.")}
        for field in _shape(message, f"{TRITON_PACKAGE}."):
            assert field == expected.get(field[1]), (name, field, expected.get(field[1]))
    for enum in ours.enum_types_by_name.values():
        theirs = default_pool.FindEnumTypeByName(f"inference.{enum.name}")
        assert {v.name: v.number for v in enum.values}.items() <= {
            v.name: v.number for v in theirs.values
        }.items()
    for method in ours.services_by_name["GRPCInferenceService"].methods:
        theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        twin = theirs.methods_by_name[method.name]
        assert method.input_type.name == twin.input_type.name, method.name
        assert method.output_type.name == twin.output_type.name, method.name
