"""Which device a runner lands on, and the checks that make bad choices clear."""

from __future__ import annotations

from backends.base import DEVICES, PRECISIONS, check_choice


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def ort_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_device(
    device: str,
    precision: str,
    cuda_available: bool,
    *,
    no_cuda: str = "no CUDA device is available",
) -> str:
    """Turn "auto" into a concrete device and reject impossible combinations.

    fp16 is a GPU precision here: on CPU it is slower than fp32 and numerically
    different, so asking for it without CUDA is an error rather than a surprise.
    `no_cuda` says why `cuda_available` is False, for a runtime that can lack CUDA on a
    machine that has a GPU (ONNX Runtime's CPU build).
    """
    check_choice("device", device, DEVICES)
    check_choice("precision", precision, PRECISIONS)
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif device == "cpu" and precision == "fp16":
        # The machine may well have a GPU: the choice of device is what rules fp16 out.
        raise ValueError(
            "precision 'fp16' needs a CUDA device, not device 'cpu'; choose from: fp32"
        )
    if device == "cuda" and not cuda_available:
        raise ValueError(f"device 'cuda' requested but {no_cuda}; use 'cpu'")
    if precision == "fp16" and device != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device but {no_cuda}; choose from: fp32")
    return device


def cuda_memory_mib() -> int:
    """Total memory of the current CUDA device, in MiB."""
    import torch

    return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory) >> 20
