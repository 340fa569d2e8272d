"""The workload catalogue: the built-in models, and catalogue entries for users' ONNX files.

Importing this module must not import torch (the scheduler and simulator use it
for specs only); torch and the model code are imported inside `build_module`.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workloads.specs import RESNET18, RESNET50, TINY, VIT_B_16, WorkloadSpec

if TYPE_CHECKING:
    import torch

# name → (spec, "module:factory"); strings so the model code is imported on demand.
_BUILTINS: dict[str, tuple[WorkloadSpec, str]] = {
    RESNET18.name: (RESNET18, "workloads.resnet:resnet18"),
    RESNET50.name: (RESNET50, "workloads.resnet:resnet50"),
    VIT_B_16.name: (VIT_B_16, "workloads.vit:vit_b_16"),
    TINY.name: (TINY, "workloads.tiny:tiny"),
}

_rng_lock = threading.Lock()  # seeded construction uses torch's global CPU generator


@dataclass(frozen=True)
class Workload:
    """A catalogue entry: its spec and how to get something that runs it."""

    spec: WorkloadSpec
    #: Set only for user ONNX workloads; backends open this file directly.
    onnx_file: Path | None = None
    #: Largest batch the model accepts; None means any. 1 for ONNX files with a fixed batch.
    max_batch: int | None = None

    @property
    def name(self) -> str:
        """The workload's catalogue name."""
        return self.spec.name

    def build_module(self, seed: int = 0, weights: str | Path | None = None) -> torch.nn.Module:
        """The model as an eval-mode torch module on CPU.

        Weights are random, reproducible from `seed` (the global RNG state is left
        untouched), unless `weights` names a state_dict saved with torch.save, which
        is then loaded with strict=True.
        """
        if self.onnx_file is not None:
            raise ValueError(
                f"workload {self.name!r} is an ONNX file ({self.onnx_file}) and has no torch "
                "module; run it with the ONNX Runtime backend"
            )
        if self.name not in _BUILTINS:
            raise ValueError(f"workload {self.name!r} has no torch module builder")

        import torch

        module_name, factory_name = _BUILTINS[self.name][1].split(":")
        factory = getattr(importlib.import_module(module_name), factory_name)
        # fork_rng(devices=[]) saves/restores the CPU generator only; seeding just that
        # generator (not torch.manual_seed, which also reseeds CUDA) keeps the caller's
        # RNG streams undisturbed.
        # The generator is process-wide: without the lock two threads building models
        # at once would interleave their draws and both get wrong "seeded" weights.
        with _rng_lock, torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            module: torch.nn.Module = factory()

        if weights is not None:
            _load_weights(module, Path(weights), self.name)
        return module.eval()


def _load_weights(module: torch.nn.Module, path: Path, name: str) -> None:
    """Load a torch.save'd state_dict into `module` with strict key/shape matching."""
    import pickle

    import torch

    try:
        # weights_only: tensors and plain containers; anything else is refused unrun.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text suggests weights_only=False: exactly what must not be done.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path}: not loading it: the file holds Python objects other than tensors"
            f"{what}, and loading them could run code; save a plain state_dict with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: expected a state_dict (a mapping), got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        hint = ""
        if "state_dict" in state or "model" in state:
            hint = " (looks like a checkpoint wrapper; save the inner state_dict)"
        raise RuntimeError(f"{path}: weights do not fit workload {name!r}{hint}: {exc}") from exc


def workload_names() -> list[str]:
    """Every built-in workload's name (a user's ONNX file is a catalogue entry of the
    gateway that serves it, see `onnx_file_workload`)."""
    return list(_BUILTINS)


def get_workload(name: str) -> Workload:
    """The catalogue entry called `name`; ValueError naming the valid choices otherwise."""
    if name in _BUILTINS:
        return Workload(_BUILTINS[name][0])
    raise ValueError(f"unknown workload {name!r}; choose from: {', '.join(workload_names())}")


def onnx_file_workload(
    path: str | Path,
    name: str | None = None,
    token_base: int | None = None,
    flops_per_sample: float | None = None,
) -> Workload:
    """The catalogue entry of a user's ONNX model, registering nothing anywhere.

    `name` defaults to the file stem, `flops_per_sample` to the estimate from the
    graph; a name that is a built-in is a ValueError. The gateway keeps the entry
    in its own catalogue of served models (server/catalogue.py) and hands it to
    the lanes, so no process-wide state changes when a gateway starts.
    """
    from workloads.onnx_file import inspect_onnx_file

    info = inspect_onnx_file(path, name, token_base, flops_per_sample)
    if info.spec.name in _BUILTINS:
        raise ValueError(f"workload name {info.spec.name!r} is a built-in; pass another name")
    return Workload(
        spec=info.spec, onnx_file=info.path, max_batch=None if info.dynamic_batch else 1
    )
