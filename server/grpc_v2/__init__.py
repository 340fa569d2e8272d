"""KServe v2 (the Open Inference Protocol) over gRPC, served beside the HTTP routes.

grpc_predict_v2.proto is KServe's protocol as published; triton_extras.proto the
wire-compatible part of Triton's additions that Triton's tools call. protos.binpb is
what grpcio-tools generates from the two (a descriptor set; tests/test_grpc_protos.py
regenerates it and compares). Modules: messages (the message classes), codec (requests
into the request core, answers out), rpcs (the RPCs), access (bearer tokens), endpoint
(the grpc.aio server on the gateway's event loop).
"""
