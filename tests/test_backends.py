"""Backends: both runners on real models, ONNX export parity and caching, bad choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.base import LoadOptions
from backends.onnx_export import export_onnx, parity_error, relative_error
from backends.registry import backend_names, get_backend, load_runner
from workloads.registry import get_workload


def batch(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_runner_outputs_have_the_declared_shape(backend: str, onnx_dir: Path) -> None:
    runner = load_runner("tiny", backend, LoadOptions(threads=1, onnx_dir=onnx_dir))
    out = runner.run(batch(5, (3, 32, 32)))
    assert out.shape == (5, 10)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert (runner.backend, runner.precision, runner.device, runner.threads) == (
        backend,
        "fp32",
        "cpu",
        1,
    )


def test_onnx_and_pytorch_agree_on_the_same_weights(onnx_dir: Path) -> None:
    x = batch(3, (3, 32, 32), seed=7)
    a = load_runner("tiny", "pytorch", LoadOptions(seed=3, onnx_dir=onnx_dir)).run(x)
    b = load_runner("tiny", "onnx", LoadOptions(seed=3, onnx_dir=onnx_dir / "s3")).run(x)
    assert relative_error(b, a) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_export_parity_at_batch_1_and_8(name: str, onnx_dir: Path) -> None:
    workload = get_workload(name)
    path = export_onnx(workload, onnx_dir)
    module = workload.build_module(seed=0)
    assert parity_error(module, path, workload.spec.input_shape, batch_sizes=(1, 8)) <= 1e-4


def test_export_is_reused_when_up_to_date_and_redone_when_stale(tmp_path: Path) -> None:
    workload = get_workload("tiny")
    path = export_onnx(workload, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert export_onnx(workload, tmp_path).stat().st_mtime_ns == stamp  # reused
    # Another seed means other weights: the cached graph no longer matches.
    export_onnx(workload, tmp_path, seed=1)
    assert path.stat().st_mtime_ns != stamp
    stamp = path.stat().st_mtime_ns
    export_onnx(workload, tmp_path, seed=1, force=True)
    assert path.stat().st_mtime_ns != stamp


def test_exported_graph_has_a_dynamic_batch_axis(onnx_dir: Path) -> None:
    import onnx

    path = export_onnx(get_workload("tiny"), onnx_dir)
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value


def test_weights_file_is_used_by_both_backends(tmp_path: Path) -> None:
    import torch

    module = get_workload("tiny").build_module(seed=42)
    weights = tmp_path / "tiny.pt"
    torch.save(module.state_dict(), weights)
    x = batch(2, (3, 32, 32))
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    opts = LoadOptions(weights=str(weights), onnx_dir=tmp_path)
    for backend in backend_names():
        assert relative_error(load_runner("tiny", backend, opts).run(x), expected) <= 1e-4


def test_user_onnx_file_runs_on_onnx_and_not_on_pytorch(onnx_dir: Path) -> None:
    from workloads.registry import onnx_file_workload

    path = export_onnx(get_workload("tiny"), onnx_dir)
    workload = onnx_file_workload(path, name="my_tiny")
    out = load_runner(workload, "onnx").run(batch(2, workload.spec.input_shape))
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="only on backend 'onnx'"):
        load_runner(workload, "pytorch")


@pytest.mark.parametrize(
    ("workload", "backend", "options", "message"),
    [
        ("tiny", "tensorrt", LoadOptions(), "unknown backend .tensorrt.; choose from: onnx"),
        ("nope", "onnx", LoadOptions(), "choose from: resnet18, resnet50, vit_b_16, tiny"),
        ("tiny", "pytorch", LoadOptions(precision="int8"), "choose from: fp32, fp16"),
        ("tiny", "pytorch", LoadOptions(precision="fp16", device="cpu"), "needs a CUDA device"),
        ("tiny", "onnx", LoadOptions(device="tpu"), "unknown device 'tpu'"),
    ],
)
def test_bad_choices_are_one_line_errors_naming_the_options(
    workload: str, backend: str, options: LoadOptions, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_runner(workload, backend, options)
    assert "\n" not in str(info.value)


def test_get_backend_returns_named_backends() -> None:
    assert {get_backend(n).name for n in backend_names()} == {"onnx", "pytorch"}
