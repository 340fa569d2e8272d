"""The CUDA and fp16 paths on a real GPU; every test here is skipped on a machine without one.

CI has no GPU, so these run only where `torch.cuda.is_available()`. They use the runners
exactly as the gateway and the profiler do: float32 numpy in, float32 numpy out. What
can be checked of these paths without a GPU is in test_cuda_paths_on_cpu.py.

With MLWS_REQUIRE_CUDA=1 (scripts/gpu-check.sh sets it) nothing here skips: a machine
whose torch or onnxruntime cannot reach the GPU fails these tests instead of passing
them by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from backends.base import LoadOptions
from backends.devices import cuda_memory_mib, ort_cuda_available, torch_cuda_available
from backends.onnx_export import relative_error
from backends.registry import load_runner
from server.config import ConfigFile
from server.config_reload import changed_keys, read_config
from server.gateway import with_device_capacity
from tests.gateway_fixtures import tiny_config
from workloads.registry import get_workload

REQUIRE_CUDA = os.environ.get("MLWS_REQUIRE_CUDA") == "1"

pytestmark = pytest.mark.skipif(
    not REQUIRE_CUDA and not torch_cuda_available(),
    reason="no CUDA device: torch.cuda.is_available() is False",
)

# Tolerances, as max |a − b| ÷ max |b| (relative_error). Both are ~10× the error
# estimated on CPU for these models (seeded random weights), and both still catch a wrong
# dtype, a lost scale or an overflow, whose errors are of order 1:
# - CUDA fp32 vs CPU fp32: cuDNN runs fp32 convolutions in TF32 by default (10-bit
#   mantissa); rounding conv inputs and weights to TF32 on CPU moves the logits by at
#   most 5e-4 (resnet50), and cuDNN's algorithm choice adds reordering on top.
# - fp16 vs fp32: running the models in fp16 on CPU gives at most 1.6e-3 (vit_b_16);
#   cuBLAS may also reduce fp16 GEMMs in reduced precision, hence the wider margin.
#   Peak activations (510 in resnet50) are far from fp16's 65504, so nothing overflows.
CUDA_FP32_RTOL = 5e-3
FP16_RTOL = 2e-2


def batch(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def cpu_reference(name: str, x: np.ndarray) -> np.ndarray:
    import torch

    module = get_workload(name).build_module(seed=0)
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def assert_top1_agrees(actual: np.ndarray, expected: np.ndarray, max_abs: float) -> None:
    """Top-1 classes agree wherever the reference's top-2 margin exceeds the error bound.

    Random weights can leave two logits nearly tied; there, a flip within the allowed
    error is not a bug, so only clearly separated samples are checked.
    """
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * max_abs
    assert clear.any(), "no sample is clearly separated; the check would prove nothing"
    assert (actual.argmax(1) == expected.argmax(1))[clear].all()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_auto_device_picks_cuda_and_keeps_float32_at_the_boundary(precision: str) -> None:
    import torch

    runner = load_runner("tiny", "pytorch", LoadOptions(precision=precision, device="auto"))
    assert runner.device == "cuda"
    dtype = torch.float16 if precision == "fp16" else torch.float32
    params = list(runner._module.parameters())  # type: ignore[attr-defined]
    assert all(p.is_cuda and p.dtype == dtype for p in params)
    out = runner.run(batch(3, (3, 32, 32)))
    assert isinstance(out, np.ndarray)
    assert (out.shape, out.dtype) == ((3, 10), np.float32)


def test_run_returns_only_after_the_gpu_has_finished() -> None:
    """The profiler and the gateway time `run` on the host clock; that is only right if
    no GPU work is still queued when it returns."""
    import torch

    runner = load_runner("resnet18", "pytorch", LoadOptions(device="cuda"))
    runner.run(batch(16, (3, 224, 224)))
    assert torch.cuda.current_stream().query()


@pytest.mark.parametrize("name", ["tiny", pytest.param("resnet18", marks=pytest.mark.slow)])
@pytest.mark.parametrize("n", [1, 8])
def test_cuda_fp32_matches_cpu(name: str, n: int) -> None:
    x = batch(n, get_workload(name).spec.input_shape, seed=n)
    expected = cpu_reference(name, x)
    actual = load_runner(name, "pytorch", LoadOptions(device="cuda")).run(x)
    assert np.isfinite(actual).all()
    assert relative_error(actual, expected) <= CUDA_FP32_RTOL


@pytest.mark.parametrize(
    "name",
    [
        "tiny",
        pytest.param("resnet18", marks=pytest.mark.slow),
        pytest.param("resnet50", marks=pytest.mark.slow),
        pytest.param("vit_b_16", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("n", [1, 8])
def test_fp16_is_finite_and_close_to_fp32(name: str, n: int) -> None:
    x = batch(n, get_workload(name).spec.input_shape, seed=n)
    fp32 = load_runner(name, "pytorch", LoadOptions(device="cuda")).run(x)
    fp16 = load_runner(name, "pytorch", LoadOptions(precision="fp16", device="cuda")).run(x)
    assert fp16.dtype == np.float32
    assert np.isfinite(fp16).all()
    err = relative_error(fp16, fp32)
    assert err <= FP16_RTOL
    assert_top1_agrees(fp16, fp32, max_abs=float(np.abs(fp16 - fp32).max()))


def test_onnx_on_cpu_matches_pytorch_on_cuda(onnx_dir: Path) -> None:
    x = batch(8, (3, 32, 32), seed=5)
    on_gpu = load_runner("tiny", "pytorch", LoadOptions(device="cuda")).run(x)
    on_cpu = load_runner("tiny", "onnx", LoadOptions(device="cpu", onnx_dir=onnx_dir)).run(x)
    assert relative_error(on_cpu, on_gpu) <= CUDA_FP32_RTOL


@pytest.mark.skipif(
    not REQUIRE_CUDA and not ort_cuda_available(),
    reason="onnxruntime here has no CUDAExecutionProvider (CPU build)",
)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx_cuda_provider_runs_and_matches_pytorch(precision: str, onnx_dir: Path) -> None:
    x = batch(8, (3, 32, 32), seed=6)
    options = LoadOptions(precision=precision, device="cuda", onnx_dir=onnx_dir)
    runner = load_runner("tiny", "onnx", options)
    assert runner.device == "cuda"
    expected = load_runner("tiny", "pytorch", LoadOptions(device="cuda")).run(x)
    tol = FP16_RTOL if precision == "fp16" else CUDA_FP32_RTOL
    assert relative_error(runner.run(x), expected) <= tol


def test_profiler_rows_on_cuda() -> None:
    from predictor.profiler import ProfileSettings, profile

    settings = ProfileSettings(warmup=1, min_repeats=3, min_time_s=0.0, max_time_s=1.0)
    rows = list(
        profile(
            ["tiny"], ["pytorch"], ["fp32", "fp16"], [1, 4], [1], device="cuda", settings=settings
        )
    )
    assert [(r.precision, r.batch_size) for r in rows] == [
        ("fp32", 1),
        ("fp32", 4),
        ("fp16", 1),
        ("fp16", 4),
    ]
    assert all(r.device == "cuda" and r.p50_ms > 0 for r in rows)


def test_profiler_measures_gpu_memory() -> None:
    """On CUDA the memory figures come from PyTorch's allocator: the weights and the
    activations are on the device, so both are positive."""
    from predictor.profiler import ProfileSettings, profile

    settings = ProfileSettings(warmup=1, min_repeats=3, min_time_s=0.0, max_time_s=1.0)
    rows = list(
        profile(["resnet18"], ["pytorch"], ["fp32"], [1, 16], [1], device="cuda", settings=settings)
    )
    resident, per_sample = rows[0].resident_mb, rows[0].per_sample_mb
    assert resident > 40  # 11.7 M float32 weights are 44.6 MiB
    assert rows[0].peak_mem_mb < rows[1].peak_mem_mb and per_sample > 0


def test_the_token_capacity_is_the_devices_memory_minus_the_reserve(onnx_dir: Path) -> None:
    config = tiny_config(onnx_dir, device="cuda", scheduler={"tokens": {"device_reserve_mb": 2048}})
    capacity = with_device_capacity(config).scheduler.tokens.capacity
    assert capacity == cuda_memory_mib() - 2048 > 0


def test_a_reload_of_the_same_file_sees_the_device_capacity_unchanged(tmp_path: Path) -> None:
    # The running config holds the capacity derived from the device; a reload reads the
    # file the same way, so the derived capacity is no "change needing a restart".
    path = tmp_path / "gateway.yaml"
    path.write_text("device: cuda\nscheduler: {tokens: {device_reserve_mb: 2048}}\n")
    running = with_device_capacity(ConfigFile(str(path)).read())
    assert running.scheduler.tokens.capacity == cuda_memory_mib() - 2048
    assert changed_keys(running, read_config(ConfigFile(str(path)))) == []
