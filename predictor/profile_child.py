"""The profiler's child process: one runner loaded, its memory and service times measured.

`mlws profile` spawns one process per (workload, backend, precision, threads), so
that the memory figures are this runner's alone: the parent's models and runtime
arenas are not in this process, and a fresh one starts from the same state each
time. Before the baseline is read the child imports the runtimes (PyTorch, ONNX
Runtime) a lane process imports anyway: library code is shared by every model of
a lane, not a model's cost. The ONNX file is exported by the parent beforehand, so
no export is counted either.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import numpy as np

from backends.base import LoadOptions, Runner
from predictor.memory_probe import MemoryProbe, probe_for
from predictor.profile_rows import ProfileRow, ProfileSettings

if TYPE_CHECKING:
    from workloads.registry import Workload
    from workloads.specs import WorkloadSpec

#: Libraries a lane imports whatever it loads: imported before the baseline.
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class RunnerJob:
    """One runner to measure: picklable, it crosses to the spawned child."""

    workload: Workload
    backend: str
    options: LoadOptions
    batch_sizes: tuple[int, ...]
    settings: ProfileSettings


def time_runs(runner: Runner, batch: np.ndarray, settings: ProfileSettings) -> list[float]:
    """Milliseconds of each measured run after warm-up."""
    for _ in range(settings.warmup):
        runner.run(batch)
    times: list[float] = []
    spent = 0.0
    while len(times) < settings.max_repeats:
        t0 = time.perf_counter()
        runner.run(batch)
        dt = time.perf_counter() - t0
        times.append(dt * 1e3)
        spent += dt
        enough = len(times) >= settings.min_repeats and spent >= settings.min_time_s
        if enough or (spent >= settings.max_time_s and len(times) >= 3):
            break
    return times


def sample_batch(spec: WorkloadSpec, batch_size: int, seed: int) -> np.ndarray:
    """A seeded float32 batch of `batch_size` samples of `spec`'s input."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *spec.input_shape), dtype=np.float32)


def measure(
    runner: Runner,
    batch_size: int,
    settings: ProfileSettings,
    spec: WorkloadSpec,
    memory: tuple[MemoryProbe, float, float],
) -> ProfileRow:
    """Profile one loaded runner at one batch size. `memory` is (probe, memory in use
    with the runner loaded and warm, its resident MiB); per_sample_mb is left NaN for
    the parent, which fits it over every batch size."""
    probe, loaded_mb, resident_mb = memory
    batch = sample_batch(spec, batch_size, settings.seed)
    probe.reset_peak()
    times = np.asarray(time_runs(runner, batch, settings))
    # Above the loaded runner's memory, not the peak's reset point: an arena that kept
    # what a smaller batch grew it to would otherwise hide that growth.
    peak = probe.peak_mb() - loaded_mb
    mean = float(times.mean())
    return ProfileRow(
        workload=runner.workload,
        backend=runner.backend,
        precision=runner.precision,
        device=runner.device,
        batch_size=batch_size,
        threads=runner.threads,
        repeats=len(times),
        mean_ms=mean,
        p50_ms=float(np.percentile(times, 50)),
        p95_ms=float(np.percentile(times, 95)),
        p99_ms=float(np.percentile(times, 99)),
        std_ms=float(times.std()),
        samples_per_s=batch_size * 1e3 / mean,
        peak_mem_mb=max(peak, 0.0),
        resident_mb=resident_mb,
        per_sample_mb=float("nan"),
        param_count=spec.param_count,
        flops_per_sample=spec.flops_per_sample,
    )


def import_runtimes() -> None:
    """Import the runtime libraries that are installed (see the module docstring)."""
    for name in RUNTIMES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def load_measured(job: RunnerJob) -> tuple[Runner, tuple[MemoryProbe, float, float]]:
    """Load and warm the runner (one batch-1 run); its probe, memory in use, resident MiB."""
    from backends.devices import resolve_device
    from backends.registry import cuda_available, load_runner

    import_runtimes()
    options = job.options
    device = resolve_device(options.device, options.precision, cuda_available(job.backend))
    probe = probe_for(device, job.backend)
    # Made before the baseline: numpy's random module is imported on first use (MiBs).
    warm_up = sample_batch(job.workload.spec, 1, job.settings.seed)
    gc.collect()
    before = probe.used_mb()
    runner = load_runner(job.workload, job.backend, options)
    runner.run(warm_up)
    gc.collect()
    loaded = probe.used_mb()
    return runner, (probe, loaded, loaded - before)


def run_child(conn: Connection) -> None:
    """The child's work: receive a RunnerJob, send ("row", ProfileRow) per batch size,
    smallest first (an arena grown by a batch is then never counted for a smaller one),
    then ("done",); on an error, ("error", the exception, its traceback) to re-raise."""
    try:
        job: RunnerJob = conn.recv()
        runner, memory = load_measured(job)
        try:
            for n in sorted(job.batch_sizes):
                conn.send(("row", measure(runner, n, job.settings, job.workload.spec, memory)))
        finally:
            runner.close()
        conn.send(("done",))
    except Exception as exc:
        trace = traceback.format_exc()
        try:
            conn.send(("error", exc, trace))
        except Exception:  # an exception that does not pickle: its type and message
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), trace))
    finally:
        conn.close()


if __name__ == "__main__":
    # `python -m predictor.profile_child FD`: FD is this end of the profiler's socket.
    run_child(Connection(int(sys.argv[1])))
