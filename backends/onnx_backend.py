"""ONNX Runtime backend: the exported graph on the CPU (or CUDA) execution provider."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backends.base import LoadOptions
from backends.devices import ort_cuda_available, resolve_device
from backends.onnx_export import locked

if TYPE_CHECKING:
    import onnxruntime as ort

    from workloads.registry import Workload


# Why ONNX Runtime cannot give CUDA here, for resolve_device's messages: a GPU may well be
# present (PyTorch can use it) while the installed onnxruntime is the CPU build.
ORT_NO_CUDA = "onnxruntime here has no CUDAExecutionProvider (that needs onnxruntime-gpu)"


def make_session(path: Path, device: str, threads: int) -> ort.InferenceSession:
    """An inference session with its own intra-op pool of `threads` threads.

    On "cuda", raises ValueError if ONNX Runtime did not start its CUDA provider.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # One graph, run sequentially: inter-op parallelism would oversubscribe the lane's cores.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads sleep instead of spinning: a spinning thread of an interactive
    # lane would take the core from low-priority batch lanes for nothing (measured:
    # no loss in latency on a 2-thread ResNet-18 run, 28.0 vs 27.3 ms).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider"] if device == "cuda" else []
    providers.append("CPUExecutionProvider")
    if device == "cuda":
        # onnxruntime-gpu's CUDA provider links cuBLAS and the CUDA runtime by name only:
        # they are the nvidia-* wheels that torch's CUDA build brings, found by the loader
        # once torch is imported. A process that never imports torch (a lane serving only
        # ONNX models) loads them here; a no-op with onnxruntime's CPU build.
        ort.preload_dlls()
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    # ONNX Runtime only logs when the CUDA provider fails to start (a CUDA or cuDNN that
    # does not match the onnxruntime-gpu build, say) and silently runs on the CPU: the
    # runner would report "cuda" and serve at CPU speed.
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ValueError(
            f"onnxruntime could not start its CUDAExecutionProvider for {path.name} and would "
            "fall back to the CPU; check that onnxruntime-gpu matches this CUDA and cuDNN "
            "(its log says what failed to load), or use device 'cpu'"
        )
    return session


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
        import onnxruntime as ort

        self._new_options = ort.RunOptions
        #: The options of the run in progress: `interrupt` sets their terminate flag.
        self._current: ort.RunOptions | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        # Fresh options per run: a terminate flag set for one run must not stop the next.
        options = self._new_options()
        self._current = options
        try:
            return self._session.run(None, {self._input: x}, options)[0]
        finally:
            self._current = None

    def interrupt(self) -> None:
        """Stop the run in progress, from another thread (ONNX Runtime checks the flag
        between operators and fails that run); a no-op when idle."""
        options = self._current
        if options is not None:
            options.terminate = True

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class OnnxBackend:
    """Loads workloads as ONNX Runtime sessions, exporting in-tree models on demand."""

    name = "onnx"
    #: Runs a user's .onnx file as it is (models[].onnx_file).
    runs_onnx_files = True
    #: Triton's platform and backend names for it (model metadata and configuration).
    triton_platform = "onnxruntime_onnx"
    triton_backend = "onnxruntime"

    @staticmethod
    def cuda_available() -> bool:
        """Whether ONNX Runtime can run on CUDA here (onnxruntime-gpu with a device)."""
        return ort_cuda_available()

    def load(self, workload: Workload, options: LoadOptions) -> OnnxRunner:
        device = resolve_device(
            options.device, options.precision, ort_cuda_available(), no_cuda=ORT_NO_CUDA
        )
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
    """An fp16 version of an fp32 graph beside it, float32 at its inputs and outputs.

    Lanes load their runners at the same time, so several may ask for the same copy at
    once: the conversion is serialised by a file lock and the file appears whole
    (written aside, then renamed), never half-written to a reader.
    """
    out = path.with_name(path.stem + ".fp16.onnx")
    with locked(out):
        if out.exists() and out.stat().st_mtime >= path.stat().st_mtime:
            return out
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        tmp = out.with_suffix(".tmp.onnx")
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    return out
