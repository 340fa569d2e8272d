"""Triton's load tool, `perf_analyzer` (PyPI `perf-analyzer`), pointed at a gateway.

scripts/install-perf-analyzer.sh puts it in the virtual environment (`make install`).

perf_analyzer is a closed loop: at concurrency c it keeps c requests in flight,
each slot sending its next request when its answer arrives. It sends real
tensors (KServe v2 over HTTP with the binary extension, or over gRPC with
``raw_input_contents``), reads the model's metadata and Triton model
configuration first (GET /v2/models/{name}/config), and reports per
concurrency level the throughput and client-side latency percentiles.

Its default input is random *bytes*, which as float32 include NaN and infinity
that the gateway refuses (422); `command` asks for zeros instead. Each level is
measured in windows until the last three agree; `count_windows` and
`time_windows` make any three agree, which bounds its run time.
"""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def binary() -> str:
    """perf_analyzer as scripts/install-perf-analyzer.sh installs it: beside this
    interpreter (the virtual environment's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file():
        return str(beside)
    found = shutil.which("perf_analyzer")
    if found is None:
        raise FileNotFoundError("perf_analyzer not found: run scripts/install-perf-analyzer.sh")
    return found


#: Stability search off: `-s` is the spread (max ÷ min − 1, percent) allowed among the
#: last three windows' throughputs and latencies; this wide, any three windows with
#: answers in them are "stable", so a noisy machine cannot keep the search going.
ANY_WINDOWS = ("-s", "10000")


def count_windows(requests: int) -> list[str]:
    """Windows of at least `requests` answers (and one second) each: three, usually."""
    mode = ["--measurement-mode", "count_windows", "--measurement-request-count"]
    return [*mode, str(requests), *ANY_WINDOWS]


def time_windows(window_ms: int) -> list[str]:
    """Windows of `window_ms` each: three, unless one had no answer."""
    return ["--measurement-interval", str(window_ms), *ANY_WINDOWS]


def command(
    model: str,
    url: str,
    protocol: str,
    concurrency: tuple[int, int],
    csv_path: Path,
    measure: Sequence[str],
) -> list[str]:
    """perf_analyzer's argv: `model` at `url` (host:port) over `protocol` ("http" or
    "grpc"), concurrency levels `concurrency[0]`..`concurrency[1]`, measured as
    `measure` says (`count_windows`, `time_windows`), a CSV report at `csv_path`."""
    low, high = concurrency
    argv = [binary(), "-m", model, "-u", url, "-i", protocol]
    argv += ["--concurrency-range", f"{low}:{high}", "--input-data", "zero", "-f", str(csv_path)]
    return [*argv, *measure]


@dataclass(frozen=True)
class Level:
    """perf_analyzer's figures at one concurrency level."""

    #: Requests in flight.
    concurrency: int
    #: Inferences per second over the measurement.
    throughput: float
    #: Client-side latency percentiles, ms (send to answer received).
    p50_ms: float
    p99_ms: float


def read_report(csv_path: Path) -> list[Level]:
    """The levels of a perf_analyzer CSV report (`-f`), in concurrency order."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    levels = [
        Level(
            concurrency=int(row["Concurrency"]),
            throughput=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / 1e3,  # the report's latencies are µs
            p99_ms=float(row["p99 latency"]) / 1e3,
        )
        for row in rows
    ]
    return sorted(levels, key=lambda level: level.concurrency)
