"""The gateway's one catalogue of served models: per name, its config and its workload.

Built from the gateway config when a gateway is built; models are added, replaced
and removed at run time through the model repository (server/model_repository.py).
A user's ONNX file becomes a workload here (`workloads.registry.onnx_file_workload`) without
registering anything process-wide, so two gateways in one process (tests, a
restart) never see each other's models; the lanes get the same `Workload`
objects, so a worker process needs no catalogue of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from server.config import GatewayConfig, ModelConfig
from server.echo import echo
from server.errors import Unavailable, UnknownModel, UnknownOption
from workloads.registry import Workload, get_workload, onnx_file_workload
from workloads.specs import WorkloadSpec


@dataclass(frozen=True)
class ServedModel:
    """One served model: how it is configured and what runs it."""

    config: ModelConfig
    workload: Workload

    @property
    def name(self) -> str:
        """The name clients ask for."""
        return self.config.name

    @property
    def spec(self) -> WorkloadSpec:
        """Shapes, dtype, token base, size."""
        return self.workload.spec

    def runner_choice(self, backend: str | None, precision: str | None) -> tuple[str, str]:
        """The backend and precision a request runs on: its own, else the model's defaults;
        UnknownOption (422) naming the choices for one the model is not served on."""
        model = self.config
        backend = backend or model.default_backend
        if backend not in model.backends:
            raise UnknownOption(
                f"model {model.name!r} is not served on backend {echo(backend)}; "
                f"choose from: {', '.join(model.backends)}",
                field="backend",
            )
        precision = precision or model.default_precision
        if precision not in model.precisions:
            raise UnknownOption(
                f"model {model.name!r} is not served at precision {echo(precision)}; "
                f"choose from: {', '.join(model.precisions)}",
                field="precision",
            )
        return backend, precision


class ServedModels:
    """Name → `ServedModel`, in the config's order (models loaded at run time last).

    Changes at run time (server/model_repository.py): a model is `add`ed once every
    lane has loaded it, `replace`d by a new version, or `remove`d after it was marked
    `unloading` and its requests (counted by `using`) have finished. A model marked
    `loading` that is not served yet, or `unloading`, is refused with a 503 naming
    the state wherever a protocol resolves a model (`require`).
    """

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = {m.name: m for m in models}
        #: Name → "loading" or "unloading", while the repository changes it.
        self._states: dict[str, str] = {}
        #: Requests of each model between admission and their answer.
        self._in_use: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ServedModels:
        """Every configured model; a user ONNX file is inspected here (ValueError if bad)."""
        served = []
        for model in config.models:
            if model.onnx_file is not None:
                workload = onnx_file_workload(
                    model.onnx_file, model.name, flops_per_sample=model.flops_per_sample
                )
            else:
                workload = get_workload(model.name)
            served.append(ServedModel(model, workload))
        return cls(served)

    def get(self, name: str) -> ServedModel | None:
        """The model called `name`, None if it is not served."""
        return self._models.get(name)

    def require(self, name: str) -> ServedModel:
        """The model called `name`: UnknownModel (404) naming the choices if it is not
        served, Unavailable (503) naming its state while it loads or unloads."""
        model = self._models.get(name)
        state = self._states.get(name)
        if state == "unloading" or (state is not None and model is None):
            raise Unavailable(f"model {name!r} is {state}")
        if model is None:
            choices = ", ".join(self._models)
            raise UnknownModel(f"unknown model {echo(name)}; choose from: {choices}", field="model")
        return model

    def add(self, model: ServedModel) -> None:
        """Serve `model` from now on (a name not served yet)."""
        if model.name in self._models:
            raise ValueError(f"model {model.name!r} is already served")
        self._models[model.name] = model

    def replace(self, model: ServedModel) -> ServedModel:
        """Serve `model` instead of the served model of its name; the old one."""
        old = self._models[model.name]
        self._models[model.name] = model
        return old

    def remove(self, name: str) -> ServedModel:
        """Stop serving model `name`; the model removed."""
        return self._models.pop(name)

    def mark(self, name: str, state: str | None) -> None:
        """Model `name` is "loading" or "unloading" now (None: neither any more)."""
        if state is None:
            self._states.pop(name, None)
        else:
            self._states[name] = state

    def changing(self) -> dict[str, str]:
        """Name → "loading" or "unloading", of every model the repository changes now."""
        return dict(self._states)

    def state(self, name: str) -> str | None:
        """ "loading" or "unloading" while the repository changes model `name`, else None."""
        return self._states.get(name)

    def using(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Count one request of model `name` until the returned context exits; Unavailable
        (503) at once if the model loads (not served yet) or unloads. An unknown name is
        not counted: resolving it (`require`) says 404."""
        if name in self._states:
            self.require(name)
        if name not in self._models:
            return contextlib.nullcontext()
        self._in_use[name] = self._in_use.get(name, 0) + 1
        release = contextlib.ExitStack()
        release.callback(self._release, name)
        return release

    async def idle(self, name: str) -> None:
        """Until no request of model `name` is in flight."""
        while self._in_use.get(name, 0):
            event = self._idle.setdefault(name, asyncio.Event())
            await event.wait()

    def _release(self, name: str) -> None:
        left = self._in_use[name] - 1
        if left:
            self._in_use[name] = left
            return
        del self._in_use[name]
        event = self._idle.pop(name, None)
        if event is not None:
            event.set()

    def names(self) -> list[str]:
        """Served model names, in the config's order."""
        return list(self._models)

    def workloads(self) -> dict[str, Workload]:
        """Name → workload, for the lanes."""
        return {name: m.workload for name, m in self._models.items()}

    def specs(self) -> dict[str, WorkloadSpec]:
        """Name → spec."""
        return {name: m.spec for name, m in self._models.items()}

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
