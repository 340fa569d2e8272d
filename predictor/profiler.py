"""Measure service time and memory per (workload, backend, precision, batch, threads).

Each combination is loaded once, warmed up, then run repeatedly until both a
minimum repeat count and a minimum measuring time are reached (capped by a
maximum time, so batch 32 of ResNet-50 on one thread does not take minutes).
The CSV it writes is the training set of the latency predictor and the
service-time table of the simulator.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.base import LoadOptions, Runner
from predictor.progress import Progress

if TYPE_CHECKING:
    from workloads.registry import Workload
    from workloads.specs import WorkloadSpec


@dataclass(frozen=True)
class ProfileSettings:
    """How hard to measure each combination."""

    warmup: int = 2
    min_repeats: int = 5
    max_repeats: int = 200
    #: Keep repeating until this much time was measured (unless max_repeats is hit).
    min_time_s: float = 0.5
    #: Stop after this much measuring time even below min_repeats (but after 3 runs).
    max_time_s: float = 6.0
    seed: int = 0


@dataclass(frozen=True)
class ProfileRow:
    """One CSV row: the measured distribution of one combination."""

    workload: str
    backend: str
    precision: str
    device: str
    batch_size: int
    threads: int
    repeats: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    std_ms: float
    samples_per_s: float
    peak_mem_mb: float
    param_count: int
    flops_per_sample: float


#: The CSV header `mlws profile` writes, in order (the live export appends busy_lanes).
PROFILE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ProfileRow))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark for this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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


def measure(
    runner: Runner, batch_size: int, settings: ProfileSettings, spec: WorkloadSpec | None = None
) -> ProfileRow:
    """Profile one loaded runner at one batch size (`spec`: its model's, default the
    built-in's of that name)."""
    from workloads.registry import get_workload

    spec = spec or get_workload(runner.workload).spec
    rng = np.random.default_rng(settings.seed)
    batch = rng.standard_normal((batch_size, *spec.input_shape), dtype=np.float32)
    base_rss = _rss_mb()
    peak_ok = _reset_peak_rss()
    times = np.asarray(time_runs(runner, batch, settings))
    peak = (_peak_rss_mb() - base_rss) if peak_ok else float("nan")
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
        param_count=spec.param_count,
        flops_per_sample=spec.flops_per_sample,
    )


#: Called after each combination with (done, total, row).
RowDone = Callable[[int, int, ProfileRow], None]


def profile(
    workloads: Sequence[str | Workload],
    backends: Sequence[str],
    precisions: Sequence[str],
    batch_sizes: Sequence[int],
    threads: Sequence[int],
    *,
    device: str = "auto",
    settings: ProfileSettings | None = None,
    onnx_dir: str | Path = "models/onnx",
    progress: RowDone | None = None,
    loading: Callable[[str], None] | None = None,
) -> Iterator[ProfileRow]:
    """Yield one row per combination; each (workload, backend, precision, threads)
    is loaded once and measured at every batch size. `loading` hears of each load
    (the first ONNX load of a model exports it, which takes a while)."""
    from backends.registry import load_runner
    from workloads.registry import get_workload

    settings = settings or ProfileSettings()
    entries = [get_workload(w) if isinstance(w, str) else w for w in workloads]
    total = len(workloads) * len(backends) * len(precisions) * len(threads) * len(batch_sizes)
    done = 0
    for w, b, p, t in product(entries, backends, precisions, threads):
        options = LoadOptions(
            precision=p, device=device, threads=t, seed=settings.seed, onnx_dir=onnx_dir
        )
        if loading:
            loading(f"loading {w.name} on {b} ({p}, {t} thread{'s' if t > 1 else ''})")
        runner = load_runner(w, b, options)
        try:
            for n in batch_sizes:
                row = measure(runner, n, settings, w.spec)
                done += 1
                if progress:
                    progress(done, total, row)
                yield row
        finally:
            runner.close()


def csv_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the CSV holds it: floats to 4 decimals (0.1 µs of a millisecond column).

    Shared with the live gateway's export (`GET /v1/profile`), so both files read alike.
    """
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def write_csv(rows: Iterator[ProfileRow] | Sequence[ProfileRow], path: Path | str) -> int:
    """Write rows as they arrive (a long run leaves a usable partial file); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PROFILE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(csv_values(asdict(row)))
            f.flush()
            n += 1
    return n


def describe(row: ProfileRow) -> str:
    """One combination and what was measured, as a progress line says it."""
    return (
        f"{row.workload} {row.backend} {row.precision} bs={row.batch_size} "
        f"threads={row.threads}: p50 {row.p50_ms:.1f} ms, {row.samples_per_s:.1f} samples/s "
        f"({row.repeats} runs)"
    )


def profile_to_csv(
    path: Path | str,
    workloads: Sequence[str | Workload],
    backends: Sequence[str],
    precisions: Sequence[str],
    batch_sizes: Sequence[int],
    threads: Sequence[int],
    *,
    show_progress: bool = True,
    **options: Any,
) -> list[ProfileRow]:
    """`profile` into the CSV at `path`, reporting each combination on stderr (a bar on
    a terminal, one line per combination elsewhere); returns the rows written.

    `options` are `profile`'s keywords (device, settings, onnx_dir).
    """
    total = len(workloads) * len(backends) * len(precisions) * len(threads) * len(batch_sizes)
    rows: list[ProfileRow] = []
    bar = Progress(total, "profile", unit="combination") if show_progress else None
    with bar or contextlib.nullcontext():
        measured = profile(
            workloads,
            backends,
            precisions,
            batch_sizes,
            threads,
            progress=(lambda _done, _total, row: bar.update(detail=describe(row))) if bar else None,
            loading=bar.note if bar else None,
            **options,
        )
        # Rows reach the file as they are measured: a long run leaves a usable partial CSV.
        write_csv(_kept(measured, rows), path)
    return rows


def _kept(rows: Iterator[ProfileRow], into: list[ProfileRow]) -> Iterator[ProfileRow]:
    for row in rows:
        into.append(row)
        yield row
