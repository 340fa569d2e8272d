"""The gRPC protocol's generated descriptors are what grpcio-tools makes of the protos.

server/grpc_v2/protos.binpb is checked in; this regenerates it into a temporary
folder and compares byte for byte, so an edited proto without a regenerated
descriptor set (or the reverse) fails here. To regenerate:

    python -m grpc_tools.protoc -I server/grpc_v2 \\
        --descriptor_set_out=server/grpc_v2/protos.binpb \\
        grpc_predict_v2.proto triton_extras.proto
"""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

from server.grpc_v2.messages import DESCRIPTOR_SET, HERE, PROTOS, SERVICE, methods


def test_descriptor_set_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "protos.binpb"
    argv = ["grpc_tools.protoc", f"-I{HERE}", f"--descriptor_set_out={out}", *PROTOS]
    assert protoc.main(argv) == 0
    assert out.read_bytes() == DESCRIPTOR_SET.read_bytes(), (
        "server/grpc_v2/protos.binpb is stale: regenerate it (see this test's docstring)"
    )


def test_every_rpc_triton_clients_call_is_served() -> None:
    """KServe's six RPCs and Triton's ModelConfig, under the service name on the wire."""
    assert SERVICE == "inference.GRPCInferenceService"
    assert {m.name for m in methods()} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
    }
