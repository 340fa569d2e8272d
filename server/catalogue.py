"""The gateway's one catalogue of served models: per name, its config and its workload.

Built once from the gateway config when a gateway is built. A user's ONNX file
becomes a workload here (`workloads.registry.onnx_file_workload`) without
registering anything process-wide, so two gateways in one process (tests, a
restart) never see each other's models; the lanes get the same `Workload`
objects, so a worker process needs no catalogue of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from server.config import GatewayConfig, ModelConfig
from server.echo import echo
from server.errors import UnknownModel, UnknownOption
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
    """Name → `ServedModel`, in the config's order."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = {m.name: m for m in models}

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
        """The model called `name`, or UnknownModel (404) naming the choices."""
        model = self._models.get(name)
        if model is None:
            choices = ", ".join(self._models)
            raise UnknownModel(f"unknown model {echo(name)}; choose from: {choices}", field="model")
        return model

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
