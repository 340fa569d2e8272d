"""The model repository extension over gRPC: Triton's RepositoryIndex, RepositoryModelLoad
and RepositoryModelUnload, what tritonclient.grpc's model control calls.

Each answers what its HTTP twin answers (server/repository.py), from the same
ModelRepository (server/model_repository.py): the index lists every model the gateway
serves or has known with its state; a load answers once the model serves (or ends
INVALID_ARGUMENT saying why not), an unload once the model's queued and running
requests have finished and it left the lanes. A load's config travels as Triton's
client sends it, the string parameter ``config`` (this project's model keys as JSON);
files travel by path only (inside `model_dir`), so parameters ``file:...`` (uploads)
are refused before anything is read. An unload's parameters (``unload_dependents``)
have nothing to act on and are ignored, as over HTTP. The gateway has one repository:
a ``repository_name`` other than empty is refused.

A load or unload runs to its end even when its call ends first (the client cancels or
its deadline passes): cut short, it would leave the model half loaded or marked
unloading for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message

from server.echo import echo
from server.grpc_v2.codec import parameter_values
from server.grpc_v2.messages import TRITON_PACKAGE, Rpc, message_class
from server.model_repository import RepositoryRefused
from server.repository import load_config

if TYPE_CHECKING:
    from server.model_repository import ModelRepository

RepositoryIndexResponse = message_class(f"{TRITON_PACKAGE}.RepositoryIndexResponse")
ModelIndex = message_class(f"{TRITON_PACKAGE}.RepositoryIndexResponse.ModelIndex")
RepositoryModelLoadResponse = message_class(f"{TRITON_PACKAGE}.RepositoryModelLoadResponse")
RepositoryModelUnloadResponse = message_class(f"{TRITON_PACKAGE}.RepositoryModelUnloadResponse")


class RepositoryRpcs:
    """The repository RPCs of one gateway, by the proto's method names (`table`)."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        #: Loads and unloads under way: held here so that one whose call ended lives on.
        self._changes: set[asyncio.Task[None]] = set()

    def table(self) -> dict[str, Rpc]:
        """Method name → implementation (errors raised, for the caller to map)."""
        return {
            "RepositoryIndex": self.index,
            "RepositoryModelLoad": self.load,
            "RepositoryModelUnload": self.unload,
        }

    async def index(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Every model the gateway serves or has known, with its state; READY ones if asked."""
        _one_repository(request.repository_name)
        entries = self.repository.index(request.ready)
        return RepositoryIndexResponse(models=[ModelIndex(**s.as_dict()) for s in entries])

    async def load(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Load (or replace) a model; answers once every lane has loaded and warmed it."""
        _one_repository(request.repository_name)
        name = _model_name(request.model_name)
        config = load_config(parameter_values(request.parameters))
        await self._to_the_end(self.repository.load(name, config))
        return RepositoryModelLoadResponse()

    async def unload(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        """Refuse the model's new requests, let its queued and running ones finish, then
        unload it from every lane."""
        _one_repository(request.repository_name)
        await self._to_the_end(self.repository.unload(_model_name(request.model_name)))
        return RepositoryModelUnloadResponse()

    async def _to_the_end(self, change: Coroutine[Any, Any, None]) -> None:
        """Await `change`, which goes on if this call is cancelled (module docstring)."""
        task = asyncio.ensure_future(change)
        self._changes.add(task)
        task.add_done_callback(_finished(self._changes))
        await asyncio.shield(task)


def _finished(changes: set[asyncio.Task[None]]) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        changes.discard(task)
        if not task.cancelled():
            task.exception()  # read: a call that ended has nobody else to; the repository logs

    return done


def _one_repository(name: str) -> None:
    if name:
        raise RepositoryRefused(
            f"repository_name {echo(name)}: this gateway has one model repository; "
            "leave repository_name empty",
            field="repository_name",
        )


def _model_name(name: str) -> str:
    if not name:
        raise RepositoryRefused("model_name is empty: name the model", field="model_name")
    return name
