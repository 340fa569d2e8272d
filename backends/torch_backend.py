"""PyTorch eager backend: the in-tree model under `inference_mode`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from backends.base import LoadOptions
from backends.devices import resolve_device, torch_cuda_available

if TYPE_CHECKING:
    import torch

    from workloads.registry import Workload


class TorchRunner:
    """Runs one in-tree model eagerly.

    PyTorch's intra-op pool is process-wide, so `threads` is applied before
    each run; lanes that need truly separate pools use process workers.
    """

    backend = "pytorch"

    def __init__(self, workload: str, module: torch.nn.Module, options: LoadOptions, device: str):
        self.workload = workload
        self.precision = options.precision
        self.device = device
        self.threads = options.threads
        self._module = module

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        with torch.inference_mode():
            y = self._module(x)
        # A blocking copy to the host: on CUDA it waits for the queued kernels, which is what
        # makes host-clock timing of `run` (profiler, gateway) the real service time.
        return y.float().cpu().numpy()

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]


class TorchBackend:
    """Loads in-tree workloads as eager PyTorch modules."""

    name = "pytorch"
    runs_onnx_files = False
    #: Triton's platform and backend names for it (model metadata and configuration).
    triton_platform = "pytorch_libtorch"
    triton_backend = "pytorch"

    @staticmethod
    def cuda_available() -> bool:
        """Whether PyTorch sees a CUDA device."""
        return torch_cuda_available()

    def load(self, workload: Workload, options: LoadOptions) -> TorchRunner:
        if workload.onnx_file is not None:
            raise ValueError(
                f"workload '{workload.name}' is an ONNX file; it runs only on backend 'onnx'"
            )
        device = resolve_device(options.device, options.precision, torch_cuda_available())
        import torch

        torch.set_num_threads(options.threads)
        module = workload.build_module(seed=options.seed, weights=options.weights).eval()
        module = module.to(device)
        if options.precision == "fp16":
            module = module.half()
        return TorchRunner(workload.name, module, options, device)
