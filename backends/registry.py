"""Name → backend, and the one call the rest of the system uses to get a runner.

Adding a backend is its file plus one line here, or, from outside the tree, a
plugin module (named in a config's `plugins:`) that calls `register_backend`
when imported. Everything that needs backend names or per-backend facts (configs,
the command line, device checks, protocol metadata) asks this registry.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from backends.base import Backend, LoadOptions, Runner, check_choice
from backends.onnx_backend import OnnxBackend
from backends.torch_backend import TorchBackend

if TYPE_CHECKING:
    from workloads.registry import Workload

BACKENDS: dict[str, type[Backend]] = {
    OnnxBackend.name: OnnxBackend,
    TorchBackend.name: TorchBackend,
}
_lock = threading.Lock()  # registration may race a lookup from a lane's thread


def register_backend(name: str, cls: type[Backend]) -> None:
    """Make `cls` available as backend `name` (a plugin calls this when imported).

    Registering the same class again is a no-op, so a module imported twice (by
    the gateway and by a worker) is harmless; another class under a taken name
    is a ValueError.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"backend name {name!r}: use letters, digits, '_' and '-'")
    with _lock:
        existing = BACKENDS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"backend {name!r} is already registered ({existing.__module__}."
                f"{existing.__qualname__}); pick another name"
            )
        BACKENDS[name] = cls


def backend_names() -> list[str]:
    """Every registered backend, sorted."""
    with _lock:
        return sorted(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name`; ChoiceError listing the valid ones otherwise."""
    check_choice("backend", name, backend_names())
    with _lock:
        return BACKENDS[name]


def get_backend(name: str) -> Backend:
    """The backend called `name`; an unknown name is a ChoiceError listing the valid ones."""
    return backend_class(name)()


def onnx_file_backends() -> list[str]:
    """Backends that run a user's ONNX file (class attribute `runs_onnx_files`)."""
    return [n for n in backend_names() if getattr(BACKENDS[n], "runs_onnx_files", False)]


def cuda_available(name: str) -> bool:
    """Whether backend `name` can run on CUDA here (False for one that cannot tell)."""
    check = getattr(backend_class(name), "cuda_available", None)
    return bool(check()) if check is not None else False


def triton_names(name: str) -> tuple[str, str]:
    """Triton's (platform, backend) names for backend `name`; the name itself for a
    class that sets none (KServe metadata, Triton model configuration)."""
    cls = backend_class(name)
    return getattr(cls, "triton_platform", name), getattr(cls, "triton_backend", name)


def load_runner(
    workload: str | Workload, backend: str, options: LoadOptions | None = None
) -> Runner:
    """Load `workload` (a built-in's name, or any catalogue entry such as a user's ONNX
    file) on `backend`, validating every name first."""
    from workloads.registry import get_workload

    entry = get_workload(workload) if isinstance(workload, str) else workload
    return get_backend(backend).load(entry, options or LoadOptions())
