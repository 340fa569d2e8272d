"""How much memory a runner holds: the process's resident set on CPU, the runtime's
allocator on CUDA.

A probe answers three questions, in MiB: memory in use now, and the peak since it
was last reset. The profiler reads them in a process of its own per runner, so
that nothing the parent loaded (another model, a runtime's arena) is counted.

- CPU (`HostMemory`): RSS from /proc/self/statm; the peak is the kernel's
  high-water mark (VmHWM), reset by writing 5 to /proc/self/clear_refs (Linux).
- CUDA, PyTorch (`TorchCudaMemory`): torch.cuda.memory_allocated and
  max_memory_allocated after reset_peak_memory_stats: the tensors' bytes, without
  the CUDA context (a few hundred MiB per process) or the caching allocator's slack.
- CUDA, any other runtime (`DeviceMemory`): the device's used memory (total minus
  free, torch.cuda.mem_get_info), since ONNX Runtime's Python API does not expose its
  CUDA arena; device-wide, so only meaningful on a GPU nothing else uses. Its arena
  keeps what it grew to, so the peak is what is in use after the runs.
"""

from __future__ import annotations

from typing import Protocol

MIB = 2**20


class MemoryProbe(Protocol):
    """Memory in use and its peak, in MiB (NaN where the platform cannot tell)."""

    def used_mb(self) -> float:
        """Memory in use now."""
        ...

    def reset_peak(self) -> None:
        """Start a new peak from what is in use now."""
        ...

    def peak_mb(self) -> float:
        """The most in use since `reset_peak`."""
        ...


class HostMemory:
    """This process's resident memory (Linux /proc)."""

    def __init__(self) -> None:
        self._peak_ok = False

    def used_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / MIB

    def reset_peak(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._peak_ok = True
        except OSError:
            self._peak_ok = False

    def peak_mb(self) -> float:
        if not self._peak_ok:
            return float("nan")
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


class TorchCudaMemory:
    """PyTorch's CUDA caching allocator: bytes held by live tensors on the device."""

    def __init__(self) -> None:
        import torch

        self._cuda = torch.cuda

    def used_mb(self) -> float:
        self._cuda.synchronize()
        return self._cuda.memory_allocated() / MIB

    def reset_peak(self) -> None:
        self._cuda.synchronize()
        self._cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        self._cuda.synchronize()
        return self._cuda.max_memory_allocated() / MIB


class DeviceMemory:
    """The CUDA device's used memory, whoever holds it (see the module docstring)."""

    def __init__(self) -> None:
        import torch

        self._cuda = torch.cuda

    def used_mb(self) -> float:
        free, total = self._cuda.mem_get_info()
        return (total - free) / MIB

    def reset_peak(self) -> None:
        """Nothing to reset: the runtime's arena only grows (see peak_mb)."""

    def peak_mb(self) -> float:
        return self.used_mb()


def probe_for(device: str, backend: str) -> MemoryProbe:
    """The probe for a runner on `device` ("cpu" or "cuda") of `backend`."""
    if device != "cuda":
        return HostMemory()
    return TorchCudaMemory() if backend == "pytorch" else DeviceMemory()


def per_sample_slope(batch_sizes: list[int], peaks_mb: list[float]) -> float:
    """MiB per sample: the least-squares slope of the peaks over the batch sizes (NaN
    pairs left out); with one batch size, the line through the origin (an upper bound,
    as its peak also holds what does not grow with the batch); NaN with none."""
    points = [(n, m) for n, m in zip(batch_sizes, peaks_mb, strict=True) if m == m]
    if not points:
        return float("nan")
    sizes = {n for n, _ in points}
    if len(sizes) == 1:
        n, m = points[0]
        return m / n
    mean_n = sum(n for n, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    cov = sum((n - mean_n) * (m - mean_m) for n, m in points)
    var = sum((n - mean_n) ** 2 for n, _ in points)
    return cov / var
