"""The RPCs of inference.GRPCInferenceService over one gateway.

Each answers what the KServe v2 HTTP route of the same name answers
(server/kserve.py), from the same functions: `model_metadata` for ModelMetadata,
`model_config` (server/kserve_config.py) for Triton's ModelConfig, the request
core for ModelInfer, the model repository for Triton's repository RPCs
(server/grpc_v2/repository.py). Health answers are booleans, as the protocol has
them; a model the gateway does not serve is NOT_FOUND, as HTTP's 404. Every error
ends the call through `server.grpc_v2.status.abort`.

ModelInfer races the core against the call's end: when the client cancels (or its
deadline passes), grpc.aio cancels the handler and ends the call; the core then
cancels the job, which leaves the queue.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from server.errors import Unavailable
from server.grpc_v2 import codec
from server.grpc_v2.messages import Rpc, message_class
from server.grpc_v2.repository import RepositoryRpcs
from server.grpc_v2.status import abort
from server.kserve import EXTENSIONS, model_metadata
from server.kserve_config import model_config
from server.offload import off_loop_if
from server.request_core import admit, count_invalid, infer

if TYPE_CHECKING:
    from server.gateway import Gateway
    from server.model_repository import ModelRepository

#: Message bytes above which decoding and encoding move off the event loop.
INLINE_BYTES = 256 * 1024

ServerLiveResponse = message_class("inference.ServerLiveResponse")
ServerReadyResponse = message_class("inference.ServerReadyResponse")
ModelReadyResponse = message_class("inference.ModelReadyResponse")
ServerMetadataResponse = message_class("inference.ServerMetadataResponse")
ModelMetadataResponse = message_class("inference.ModelMetadataResponse")
ModelConfigResponse = message_class("inference.triton.ModelConfigResponse")


class Rpcs:
    """The RPC implementations, by the proto's method names (`table`)."""

    def __init__(self, gw: Gateway, version: str, repository: ModelRepository) -> None:
        self.gw = gw
        #: The server version ServerMetadata reports (the HTTP app's).
        self.version = version
        self.repository = RepositoryRpcs(repository)

    def table(self) -> dict[str, Rpc]:
        """Method name → implementation, each ending the call with its error's status."""
        plain: dict[str, Rpc] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelConfig": self.model_config,
            "ModelInfer": self.model_infer,
            **self.repository.table(),
        }
        return {name: self._answering(rpc) for name, rpc in plain.items()}

    def _answering(self, rpc: Rpc) -> Rpc:
        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Message:
            try:
                return await rpc(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # mapped, not swallowed: classify logs what is a bug
                await abort(context, exc, self.gw.config.retry_after_s)

        return answer

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """True while the process serves."""
        return ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """True when every model is loaded and warmed (as /readyz)."""
        return ServerReadyResponse(ready=self.gw.ready)

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """True when the model is served and the gateway ready; NOT_FOUND if not served."""
        codec.check_version(request.name, request.version)
        try:
            self.gw.models.require(request.name)
        except Unavailable:  # loading or unloading: not ready
            return ModelReadyResponse(ready=False)
        return ModelReadyResponse(ready=self.gw.ready)

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Server name, version and protocol extensions (as GET /v2)."""
        return ServerMetadataResponse(name="mlws", version=self.version, extensions=EXTENSIONS)

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """The model's tensors (as GET /v2/models/{name})."""
        codec.check_version(request.name, request.version)
        metadata = model_metadata(self.gw, request.name)
        return json_format.ParseDict(metadata, ModelMetadataResponse())

    async def model_config(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Triton's model configuration (as GET /v2/models/{name}/config)."""
        codec.check_version(request.name, request.version)
        config = model_config(self.gw, request.name).model_dump()
        return json_format.ParseDict({"config": config}, ModelConfigResponse())

    async def model_infer(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Inference through the request core; its answer as raw output bytes."""
        gw = self.gw
        arrival = admit(gw)
        try:
            sample_shape = gw.models.require(request.model_name).spec.input_shape
            big = request.ByteSize() > INLINE_BYTES
            decoded = await off_loop_if(big, codec.decode_infer, request, sample_shape)
        except Exception:
            count_invalid(gw, request.model_name, "interactive")  # metrics bound unknown names
            raise
        answer = await infer(gw, decoded.call, _ended(context), arrival)
        if answer is None:  # the client is gone; nobody reads this
            await context.abort(grpc.StatusCode.CANCELLED, "the client cancelled the call")
        big = answer.outputs.nbytes > INLINE_BYTES
        return await off_loop_if(big, codec.encode_infer, decoded, answer)


def _ended(context: grpc.aio.ServicerContext) -> asyncio.Future[None]:
    """A future that completes when the call ends (a cancelled call ends before we answer)."""
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(_: object) -> None:
        if not ended.done():
            ended.set_result(None)

    context.add_done_callback(done)
    return ended
