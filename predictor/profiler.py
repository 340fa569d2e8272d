"""Measure service time and memory per (workload, backend, precision, batch, threads).

Each (workload, backend, precision, threads) is loaded once, in a spawned process of
its own (predictor/profile_child.py), warmed up, then run at each batch size
repeatedly until both a minimum repeat count and a minimum measuring time are
reached (capped by a maximum time, so batch 32 of ResNet-50 on one thread does not
take minutes). Its own process keeps the memory figures clean: the runner's
resident memory (weights plus runtime arena) and, fitted here over its batch sizes,
its memory per sample. The CSV it writes is the training set of the latency
predictor, the service-time table of the simulator, and the source of measured
token costs (predictor/memory_costs.py).
"""

from __future__ import annotations

import contextlib
import csv
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from itertools import product
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.base import LoadOptions
from predictor.memory_probe import per_sample_slope
from predictor.profile_child import RunnerJob
from predictor.profile_rows import PROFILE_COLUMNS, ProfileRow, ProfileSettings, csv_values
from predictor.progress import Progress

if TYPE_CHECKING:
    from workloads.registry import Workload

#: Seconds a finished child is given to exit before it is killed.
CHILD_EXIT_S = 10.0


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
    """Yield one row per combination; each (workload, backend, precision, threads) is
    measured in a process of its own at every batch size (smallest first), and its rows
    come once all its sizes are in, with per_sample_mb fitted over them. `loading`
    hears of each load (the first ONNX load of a model exports it, which takes a while)."""
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
        _export_first(w, b, options)
        rows = []
        for row in _measured_in_child(RunnerJob(w, b, options, tuple(batch_sizes), settings)):
            done += 1
            if progress:
                progress(done, total, row)
            rows.append(row)
        slope = per_sample_slope([r.batch_size for r in rows], [r.peak_mem_mb for r in rows])
        yield from (replace(r, per_sample_mb=slope) for r in rows)


def _export_first(workload: Workload, backend: str, options: LoadOptions) -> None:
    """Export an in-tree model for ONNX Runtime here, as the gateway does before its
    lanes start, so that the child's load (and its memory) is the runner's alone."""
    if backend != "onnx" or workload.onnx_file is not None:
        return
    from backends.onnx_backend import fp16_copy
    from backends.onnx_export import export_onnx

    path = export_onnx(workload, options.onnx_dir, seed=options.seed, weights=options.weights)
    if options.precision == "fp16":
        fp16_copy(path)


def _measured_in_child(job: RunnerJob) -> Iterator[ProfileRow]:
    """The rows a fresh process measures for `job`, as they come; its error re-raised
    here (with the child's traceback as a note); the child killed if left unfinished.

    A plain `python -m` process, not a multiprocessing one: spawn would re-run the
    caller's main module in the child, and whatever that loads would be counted.
    """
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.Popen(
        [sys.executable, "-m", "predictor.profile_child", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env=env,
    )
    theirs.close()  # the child holds the other end: its exit means EOF here
    conn = Connection(ours.detach())
    try:
        conn.send(job)
        while True:
            try:
                message = conn.recv()
            except EOFError:
                raise RuntimeError(
                    f"profiling {job.workload.name} on {job.backend} ({job.options.precision}): "
                    f"the measuring process died (exit code {child.wait(CHILD_EXIT_S)})"
                ) from None
            if message[0] == "row":
                yield message[1]
            elif message[0] == "done":
                return
            else:
                exc: BaseException = message[1]
                exc.add_note(f"in the profiler's measuring process:\n{message[2]}")
                raise exc
    finally:
        conn.close()
        try:
            child.wait(CHILD_EXIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


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
        f"({row.repeats} runs), peak +{row.peak_mem_mb:.1f} MiB over {row.resident_mb:.1f} MiB "
        "resident"
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
