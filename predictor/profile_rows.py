"""What `mlws profile` measures and writes: its settings, one row, the CSV columns.

A module of its own because both sides of the profiler use it: the parent that
spawns one process per runner and writes the CSV, and the child that measures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


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
    """One CSV row: the measured distribution of one combination.

    Memory is in MiB, of the process's resident memory on CPU and of the runtime's
    device allocator on CUDA (predictor/memory_probe.py says which): `resident_mb`
    is the runner's (weights plus runtime arena, after load and a warm-up run),
    `peak_mem_mb` the peak above it while this batch size ran (activations, input
    and output), `per_sample_mb` the least-squares slope of peak_mem_mb over the
    runner's batch sizes. NaN (an empty cell) where not measured.
    """

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
    resident_mb: float
    per_sample_mb: float
    param_count: int
    flops_per_sample: float


#: The CSV header `mlws profile` writes, in order (the live export appends busy_lanes).
PROFILE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ProfileRow))


def csv_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the CSV holds it: floats to 4 decimals (0.1 µs of a millisecond column),
    NaN (not measured) as an empty cell.

    Shared with the live gateway's export (`GET /v1/profile`), so both files read alike.
    """
    return {k: _cell(v) if isinstance(v, float) else v for k, v in row.items()}


def _cell(value: float) -> float | str:
    return "" if math.isnan(value) else round(value, 4)
