"""Name → backend, and the one call the rest of the system uses to get a runner."""

from __future__ import annotations

from backends.base import Backend, LoadOptions, Runner, check_choice
from backends.onnx_backend import OnnxBackend
from backends.torch_backend import TorchBackend

BACKENDS: dict[str, type[Backend]] = {"onnx": OnnxBackend, "pytorch": TorchBackend}


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called `name`; an unknown name is a ChoiceError listing the valid ones."""
    check_choice("backend", name, backend_names())
    return BACKENDS[name]()


def load_runner(workload: str, backend: str, options: LoadOptions | None = None) -> Runner:
    """Load `workload` on `backend` (validating every name first)."""
    from workloads.registry import get_workload

    return get_backend(backend).load(get_workload(workload), options or LoadOptions())
