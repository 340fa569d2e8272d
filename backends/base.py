"""The one interface every backend implements: load a workload → a runner.

A runner owns a loaded model at one precision on one device with its own
intra-op thread count; `run` takes a numpy batch and returns numpy outputs.
Runners are not thread-safe: a lane owns its runners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from workloads.registry import Workload

PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class ChoiceError(ValueError):
    """A name that is not one of the valid choices; the message lists them."""

    def __init__(self, kind: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} '{value}'; choose from: {', '.join(choices)}")


def check_choice(kind: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return `value` if it is a valid choice, else raise ChoiceError naming the choices."""
    if value not in choices:
        raise ChoiceError(kind, value, choices)
    return value


@dataclass(frozen=True)
class LoadOptions:
    """How to load a workload: precision, device and threads for one runner."""

    precision: str = "fp32"
    #: "cpu", "cuda", or "auto" (CUDA when present, else CPU).
    device: str = "auto"
    #: Intra-op threads for this runner.
    threads: int = 1
    #: Seed for random weights (ignored when `weights` is given).
    seed: int = 0
    #: A torchvision-compatible state_dict file, or None for seeded random weights.
    weights: str | None = None
    #: Where exported ONNX files are cached.
    onnx_dir: Path | str = "models/onnx"


class Runner(Protocol):
    """A loaded model ready to run batches."""

    workload: str
    backend: str
    precision: str
    device: str
    threads: int

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (float32, batch axis first); returns float32 outputs.

        Returns host memory only after the device has finished: the profiler and the
        gateway time `run` with the host clock, which is right only if no GPU work is
        still queued when it returns.
        """
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


class Backend(Protocol):
    """Loads workloads into runners.

    Registered by name in backends/registry.py. Optional class attributes the
    registry reads with a default: `runs_onnx_files` (False), `triton_platform` and
    `triton_backend` (the name), and a static `cuda_available()` (False).
    """

    name: str

    def load(self, workload: Workload, options: LoadOptions) -> Runner:
        """Load `workload` as described by `options`; raises ValueError on bad options."""
        ...
