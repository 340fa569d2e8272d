"""The parts of the CUDA and fp16 paths that can be checked on a machine without a GPU.

The fp16 ONNX graph is device-independent (ONNX Runtime's CPU provider runs it too), and
the refusals when CUDA is missing are exactly what a CPU machine exercises. The real
GPU runs are in test_cuda.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from backends.base import LoadOptions
from backends.devices import ort_cuda_available, resolve_device
from backends.onnx_backend import fp16_copy, make_session
from backends.onnx_export import export_onnx, relative_error
from backends.registry import load_runner
from workloads.registry import get_workload

no_ort_cuda = pytest.mark.skipif(
    ort_cuda_available(), reason="onnxruntime here has CUDA: the CPU-only refusals do not apply"
)


def batch(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def test_fp16_graph_keeps_float32_io_and_stays_close(onnx_dir: Path) -> None:
    path = export_onnx(get_workload("tiny"), onnx_dir)
    model = onnx.load(str(fp16_copy(path)))
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {float32}
    float_weights = {t.data_type for t in model.graph.initializer} & {float32, float16}
    assert float_weights == {float16}

    x = batch(8, (3, 32, 32), seed=3)
    fp32 = make_session(path, "cpu", 1).run(None, {"input": x})[0]
    fp16 = make_session(fp16_copy(path), "cpu", 1).run(None, {"input": x})[0]
    assert fp16.dtype == np.float32
    # fp16's epsilon is ~1e-3; this graph measured 3e-4.
    assert relative_error(fp16, fp32) <= 1e-2


def test_fp16_copy_is_whole_when_lanes_ask_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lanes load at the same time; none may read the copy while another is writing it."""
    path = export_onnx(get_workload("tiny"), tmp_path)

    def slow_save(model: onnx.ModelProto, f: str) -> None:
        # Hold the write half-done, as a large graph's write is, so a reader that does
        # not wait for the writer would find a truncated file.
        data = model.SerializeToString()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            time.sleep(0.3)
            out.write(data[len(data) // 2 :])

    monkeypatch.setattr(onnx, "save", slow_save)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def lane(delay: float) -> None:
        start.wait()
        time.sleep(delay)
        try:
            make_session(fp16_copy(path), "cpu", 1)
        except Exception as exc:  # collected: an exception in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=lane, args=(0.05 * i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not list(tmp_path.glob("*.tmp.onnx"))


@no_ort_cuda
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_onnx_session_refuses_to_fall_back_to_cpu_silently(onnx_dir: Path) -> None:
    path = export_onnx(get_workload("tiny"), onnx_dir)
    with pytest.raises(ValueError, match="could not start its CUDAExecutionProvider"):
        make_session(path, "cuda", 1)


@no_ort_cuda
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (LoadOptions(device="cuda"), "device 'cuda' requested but onnxruntime here has no CUDA"),
        (LoadOptions(precision="fp16"), "'fp16' needs a CUDA device but onnxruntime here has no"),
    ],
)
def test_onnx_backend_names_onnxruntime_as_what_lacks_cuda(
    options: LoadOptions, message: str, onnx_dir: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        load_runner("tiny", "onnx", dataclasses.replace(options, onnx_dir=onnx_dir))


def test_fp16_on_device_cpu_is_refused_even_with_a_gpu() -> None:
    # The device chosen rules fp16 out; "the machine has no GPU" would be false here.
    with pytest.raises(ValueError, match="needs a CUDA device, not device 'cpu'"):
        resolve_device("cpu", "fp16", cuda_available=True)
    assert resolve_device("auto", "fp16", cuda_available=True) == "cuda"
