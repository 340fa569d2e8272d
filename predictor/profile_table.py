"""Service times from a measured profile CSV: the simulator's ground truth.

The profiler (`mlws profile`) writes one row per (workload, backend, precision,
batch_size, threads) with latency statistics. `ProfileTable` turns one thread
count and one statistic of that file into a `ServiceTimeModel`:

- between measured batch sizes: piecewise-linear interpolation;
- beyond the measured range: the straight line through the two nearest points
  (a batch of 48 continues the 16 → 32 slope), because batched CPU inference
  grows close to linearly in the batch once the cores are saturated;
- never below `MIN_SERVICE_S`, so an extrapolation to small batches cannot
  produce zero or negative time (which would break the simulator's clock).

Pure python + csv + numpy: the simulator must not import torch.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Columns every profile must have (the profiler writes more; they are ignored here).
REQUIRED_COLUMNS: tuple[str, ...] = ("workload", "backend", "precision", "batch_size", "threads")
#: Latency statistics a table may be built from.
STATS: tuple[str, ...] = ("mean_ms", "p50_ms", "p95_ms", "p99_ms")
#: Smallest service time a prediction may return, seconds (10 µs).
MIN_SERVICE_S = 1e-5

Combo = tuple[str, str, str]  # (workload, backend, precision)


class ProfileError(ValueError):
    """A profile file is unreadable or lacks what was asked of it."""


@dataclass(frozen=True)
class _Curve:
    """Measured points of one combo: batch sizes ascending, times in seconds."""

    batch: np.ndarray
    seconds: np.ndarray

    def at(self, samples: int) -> float:
        """Interpolate inside the range, extrapolate linearly outside it."""
        b, t = self.batch, self.seconds
        if len(b) == 1:
            # One point gives no slope: assume time proportional to samples.
            value = float(t[0]) * samples / float(b[0])
        elif samples < b[0]:
            value = _line(b[0], t[0], b[1], t[1], samples)
        elif samples > b[-1]:
            value = _line(b[-2], t[-2], b[-1], t[-1], samples)
        else:
            value = float(np.interp(samples, b, t))
        return max(value, MIN_SERVICE_S)


def _line(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    """The value at x of the straight line through (x0, y0) and (x1, y1)."""
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


class ProfileTable:
    """A `ServiceTimeModel` backed by one thread count of a profile CSV.

    `predict` is called once per dispatch in million-job simulations, so every
    answer is memoised by (workload, backend, precision, samples). A table holds
    one statistic (`stat`) and no spread: it plans with the same value.
    """

    #: Measured rows never change.
    version = 0

    def __init__(
        self,
        curves: Mapping[Combo, _Curve],
        *,
        threads: int,
        stat: str,
        source: str = "<table>",
    ) -> None:
        self._curves = dict(curves)
        self._cache: dict[tuple[str, str, str, int], float] = {}
        self.threads = threads
        self.stat = stat
        self.source = source

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_csv(
        cls, path: str | Path, *, threads: int | None = None, stat: str = "mean_ms"
    ) -> ProfileTable:
        """Load one thread count and one statistic of a profiler CSV.

        `threads=None` is allowed only when the file holds a single thread
        count; otherwise the error lists the counts it has.
        """
        if stat not in STATS:
            raise ProfileError(f"unknown stat {stat!r}; choose from {', '.join(STATS)}")
        path = Path(path)
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
                header = rows[0].keys() if rows else _header_of(path)
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read profile: {exc.strerror or exc}") from None
        missing = [c for c in (*REQUIRED_COLUMNS, stat) if c not in header]
        if missing:
            raise ProfileError(f"{path}: missing column(s) {', '.join(missing)}")
        if not rows:
            raise ProfileError(f"{path}: profile has no rows")
        parsed = list(_parse_rows(rows, stat, path))
        available = sorted({r[3] for r in parsed})
        if threads is None:
            if len(available) > 1:
                raise ProfileError(
                    f"{path}: profile has several thread counts ({_join(available)}); "
                    "choose one (service_time.threads)"
                )
            threads = available[0]
        elif threads not in available:
            raise ProfileError(
                f"{path}: no rows with threads={threads}; the file has threads {_join(available)}"
            )
        return cls.from_points(
            ((r[0], r[1], r[2], r[4], r[5]) for r in parsed if r[3] == threads),
            threads=threads,
            stat=stat,
            source=str(path),
        )

    @classmethod
    def from_points(
        cls,
        points: Iterable[tuple[str, str, str, int, float]],
        *,
        threads: int = 1,
        stat: str = "mean_ms",
        source: str = "<table>",
    ) -> ProfileTable:
        """Build from (workload, backend, precision, batch_size, milliseconds) points."""
        grouped: dict[Combo, dict[int, float]] = {}
        for workload, backend, precision, batch, ms in points:
            per_batch = grouped.setdefault((workload, backend, precision), {})
            if batch in per_batch:
                raise ProfileError(
                    f"{source}: duplicate row for {workload}/{backend}/{precision} "
                    f"batch_size={batch} threads={threads}"
                )
            per_batch[batch] = ms
        curves = {
            combo: _Curve(
                batch=np.array(sorted(pb), dtype=float),
                seconds=np.array([pb[b] / 1000.0 for b in sorted(pb)], dtype=float),
            )
            for combo, pb in grouped.items()
        }
        return cls(curves, threads=threads, stat=stat, source=source)

    # ------------------------------------------------------------------ queries
    def combos(self) -> list[Combo]:
        """The (workload, backend, precision) combinations the table covers."""
        return sorted(self._curves)

    def batch_sizes(self, workload: str, backend: str, precision: str) -> list[int]:
        """Measured batch sizes of one combination, ascending."""
        return [int(b) for b in self._curve(workload, backend, precision).batch]

    def require(self, combos: Iterable[Combo]) -> None:
        """Raise one `ProfileError` naming every requested combo the table lacks."""
        lacking = sorted({tuple(c) for c in combos} - set(self._curves))
        if lacking:
            names = ", ".join("/".join(c) for c in lacking)
            raise ProfileError(
                f"{self.source}: no rows for {names} at threads={self.threads}; "
                f"the file has {self._describe()}"
            )

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """Service time in seconds of running `samples` samples in one batch."""
        key = (workload, backend, precision, samples)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        value = self._curve(workload, backend, precision).at(samples)
        self._cache[key] = value
        return value

    def plan(self, workload: str, backend: str, precision: str, samples: int) -> float:
        """The planning estimate: the table's own statistic (it knows no spread)."""
        return self.predict(workload, backend, precision, samples)

    def _curve(self, workload: str, backend: str, precision: str) -> _Curve:
        curve = self._curves.get((workload, backend, precision))
        if curve is None:
            raise ProfileError(
                f"{self.source}: no rows for workload={workload} backend={backend} "
                f"precision={precision} threads={self.threads}; the file has {self._describe()}"
            )
        return curve

    def _describe(self) -> str:
        return ", ".join("/".join(c) for c in self.combos()) or "nothing"

    def __repr__(self) -> str:
        return f"ProfileTable({self.source!r}, threads={self.threads}, stat={self.stat!r})"


def _header_of(path: Path) -> list[str]:
    """Column names of a CSV with a header and no data rows."""
    with path.open(newline="") as fh:
        return next(csv.reader(fh), [])


def _parse_rows(
    rows: list[dict[str, str]], stat: str, path: Path
) -> Iterable[tuple[str, str, str, int, int, float]]:
    """Yield (workload, backend, precision, threads, batch_size, ms), checking each value."""
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            batch = int(row["batch_size"])
            threads = int(row["threads"])
            ms = float(row[stat])
        except (TypeError, ValueError):
            raise ProfileError(
                f"{path}:{line}: batch_size, threads and {stat} must be numbers, got "
                f"{row.get('batch_size')!r}, {row.get('threads')!r}, {row.get(stat)!r}"
            ) from None
        if batch < 1 or threads < 1 or not np.isfinite(ms) or ms <= 0:
            raise ProfileError(
                f"{path}:{line}: need batch_size >= 1, threads >= 1 and {stat} > 0, got "
                f"{batch}, {threads}, {ms}"
            )
        yield row["workload"], row["backend"], row["precision"], threads, batch, ms


def _join(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)
