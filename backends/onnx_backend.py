"""ONNX Runtime backend: the exported graph on the CPU (or CUDA) execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backends.base import LoadOptions
from backends.devices import ort_cuda_available, resolve_device

if TYPE_CHECKING:
    import onnxruntime as ort

    from workloads.registry import Workload


def make_session(path: Path, device: str, threads: int) -> ort.InferenceSession:
    """An inference session with its own intra-op pool of `threads` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # One graph, run sequentially: inter-op parallelism would oversubscribe the lane's cores.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider"] if device == "cuda" else []
    providers.append("CPUExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxRunner:
    """Runs one ONNX graph; inputs and outputs stay float32 at every precision."""

    backend = "onnx"

    def __init__(
        self, workload: str, session: ort.InferenceSession, options: LoadOptions, device: str
    ) -> None:
        self.workload = workload
        self.precision = options.precision
        self.device = device
        self.threads = options.threads
        self._session = session
        self._input = session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self._session.run(None, {self._input: x})[0]

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class OnnxBackend:
    """Loads workloads as ONNX Runtime sessions, exporting in-tree models on demand."""

    name = "onnx"

    def load(self, workload: Workload, options: LoadOptions) -> OnnxRunner:
        device = resolve_device(options.device, options.precision, ort_cuda_available())
        if workload.onnx_file is not None:
            path = Path(workload.onnx_file)
        else:
            from backends.onnx_export import export_onnx

            path = export_onnx(
                workload, options.onnx_dir, seed=options.seed, weights=options.weights
            )
        if options.precision == "fp16":
            path = fp16_copy(path)
        return OnnxRunner(
            workload.name, make_session(path, device, options.threads), options, device
        )


def fp16_copy(path: Path) -> Path:
    """An fp16 version of an fp32 graph beside it, float32 at its inputs and outputs."""
    out = path.with_name(path.stem + ".fp16.onnx")
    if out.exists() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(out))
    return out
