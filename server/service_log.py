"""The live gateway's observed service times, exported as latency-predictor training rows.

The dispatcher records every successful dispatch (and every calibration run)
under its (workload, backend, precision, batch size, busy lanes); `profile_rows`
summarises each key in the columns `mlws profile` writes (`PROFILE_COLUMNS`)
plus `busy_lanes`, so `GET /v1/profile` is a training set beside profiler CSVs:

    mlws predictor train --profiles configs/profiles/cpu.csv,live.csv --out p.mlws

Memory is bounded: each key keeps its most recent `keep` service times, and the
keys themselves are bounded by the configuration (models × backends ×
precisions × dispatch sizes up to the dispatch cap × lanes).

Two columns differ from the profiler's on purpose:

- `busy_lanes`: how many *other* lanes were running a dispatch when this one
  started — the contention feature the predictor reads (`predictor.features`);
  the profiler measures one runner alone, i.e. busy_lanes 0, and omits it.
- the memory columns (`peak_mem_mb`, `resident_mb`, `per_sample_mb`) are left
  empty: the gateway does not measure a dispatch's memory, and the predictor and
  the simulator's `ProfileTable` read only the latency, size and key columns (a
  profile named as `scheduler.tokens.profile` needs them: use `mlws profile`'s),
  so an empty cell is honest where a 0 would be a false measurement.

Pure (numpy + csv): the caller supplies the device and model sizes.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.profile_rows import PROFILE_COLUMNS, csv_values
from workloads.specs import WorkloadSpec

#: The export's header: the profiler's columns, then the contention feature.
LIVE_PROFILE_COLUMNS: tuple[str, ...] = (*PROFILE_COLUMNS, "busy_lanes")
#: Service times kept per key by default: enough for stable p99s, a few KiB per key.
DEFAULT_KEEP = 1000


@dataclass(frozen=True, order=True)
class ServiceKey:
    """What a service time is recorded under: one CSV row each."""

    workload: str
    backend: str
    precision: str
    #: Samples in the dispatch.
    batch_size: int
    #: Intra-op threads of the lane that ran it.
    threads: int
    #: Other lanes running a dispatch when this one started.
    busy_lanes: int


class ServiceLog:
    """The most recent service times (seconds) of each key; old ones fall off."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self._times: dict[ServiceKey, deque[float]] = {}

    def record(self, key: ServiceKey, service_s: float) -> None:
        """One timed run under `key`."""
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self.keep)
        times.append(service_s)

    def snapshot(self) -> dict[ServiceKey, list[float]]:
        """A copy of every key's service times, safe to summarise on another thread
        while the event loop keeps recording."""
        return {key: list(times) for key, times in self._times.items()}


#: (backend, precision) → the device its runners run on ("cpu" or "cuda").
DeviceOf = Callable[[str, str], str]


def profile_rows(
    times: Mapping[ServiceKey, Iterable[float]],
    *,
    device_of: DeviceOf,
    specs: Mapping[str, WorkloadSpec],
    min_repeats: int = 1,
) -> list[dict[str, Any]]:
    """One row per key with at least `min_repeats` service times, sorted by key,
    in the columns of `LIVE_PROFILE_COLUMNS` (statistics as the profiler computes them)."""
    rows = []
    for key in sorted(times):
        ms = np.asarray(list(times[key]), dtype=float) * 1e3
        if len(ms) < max(min_repeats, 1):
            continue
        spec = specs.get(key.workload)
        if spec is None:
            continue  # a model unloaded since (server/model_repository.py)
        mean = float(ms.mean())
        rows.append(
            {
                "workload": key.workload,
                "backend": key.backend,
                "precision": key.precision,
                "device": device_of(key.backend, key.precision),
                "batch_size": key.batch_size,
                "threads": key.threads,
                "repeats": len(ms),
                "mean_ms": mean,
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
                "p99_ms": float(np.percentile(ms, 99)),
                "std_ms": float(ms.std()),
                "samples_per_s": key.batch_size * 1e3 / mean,
                # Not measured live; see the module docstring.
                "peak_mem_mb": "",
                "resident_mb": "",
                "per_sample_mb": "",
                "param_count": spec.param_count,
                "flops_per_sample": spec.flops_per_sample,
                "busy_lanes": key.busy_lanes,
            }
        )
    return rows


def profile_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows as CSV text, written like `mlws profile` output (same rounding, CRLF lines
    as RFC 4180 has them); the header even with no rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LIVE_PROFILE_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_values(row))
    return out.getvalue()
