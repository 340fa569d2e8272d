"""Measured memory: `mlws profile`'s figures on CPU are positive, grow with the batch, and
agree with a fresh process's RSS growth on loading the model; a profile's figures
become token costs (predictor/memory_costs.py)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictor.memory_costs import read_memory_costs
from predictor.memory_probe import per_sample_slope
from predictor.profile_rows import ProfileRow, ProfileSettings
from predictor.profiler import profile, write_csv
from tests.project_structure import REPO

FAST = ProfileSettings(warmup=1, min_repeats=3, min_time_s=0.0, max_time_s=1.0)
#: How far the profiled resident figure may be from a fresh process's RSS growth.
AGREEMENT = 0.20

#: A lane's view of loading a model: runtimes and numpy's random module imported, then
#: RSS before and after loading the runner and running one sample (prints MiB).
REFERENCE = """
import contextlib, gc, sys
import numpy as np
for name in ("torch", "onnxruntime"):
    with contextlib.suppress(ImportError):
        __import__(name)
from backends.base import LoadOptions
from backends.registry import load_runner
from workloads.registry import get_workload
workload, backend, onnx_dir = sys.argv[1:4]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
shape = (1, *get_workload(workload).spec.input_shape)
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
gc.collect()
before = rss()
runner = load_runner(workload, backend, LoadOptions(device="cpu", onnx_dir=onnx_dir))
runner.run(x)
gc.collect()
print(rss() - before)
"""


def rss_growth_on_load(workload: str, backend: str, onnx_dir: Path) -> float:
    """MiB a fresh process grows by when it loads and warms `workload` on `backend`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", REFERENCE, workload, backend, str(onnx_dir)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=True)
    return float(done.stdout.split()[-1])


def measured(workload: str, backend: str, sizes: list[int], onnx_dir: Path) -> list[ProfileRow]:
    rows = profile(
        [workload], [backend], ["fp32"], sizes, [1], device="cpu", settings=FAST, onnx_dir=onnx_dir
    )
    return list(rows)


@pytest.fixture(scope="module")
def tiny_rows(onnx_dir: Path) -> dict[str, list[ProfileRow]]:
    return {b: measured("tiny", b, [1, 64, 256], onnx_dir) for b in ("onnx", "pytorch")}


@pytest.mark.parametrize("backend", ["onnx", "pytorch"])
def test_tiny_figures_are_positive_and_grow_with_the_batch(
    backend: str, tiny_rows: dict[str, list[ProfileRow]], onnx_dir: Path
) -> None:
    rows = tiny_rows[backend]
    assert [r.batch_size for r in rows] == [1, 64, 256]
    resident, per_sample = rows[0].resident_mb, rows[0].per_sample_mb
    assert all((r.resident_mb, r.per_sample_mb) == (resident, per_sample) for r in rows)
    peaks = [r.peak_mem_mb for r in rows]
    assert peaks[0] < peaks[1] < peaks[2], peaks
    assert resident > 0 and per_sample > 0
    reference = rss_growth_on_load("tiny", backend, onnx_dir)
    print(
        f"tiny/{backend}: resident {resident:.2f} MiB (fresh process: {reference:.2f}), "
        f"{per_sample:.3f} MiB/sample, peaks {peaks}"
    )
    assert abs(resident - reference) <= AGREEMENT * reference


def test_resnet18_resident_agrees_with_a_fresh_process(onnx_dir: Path) -> None:
    rows = measured("resnet18", "onnx", [1, 8], onnx_dir)
    resident, per_sample = rows[0].resident_mb, rows[0].per_sample_mb
    assert rows[0].peak_mem_mb < rows[1].peak_mem_mb and per_sample > 0
    reference = rss_growth_on_load("resnet18", "onnx", onnx_dir)
    print(
        f"resnet18/onnx: resident {resident:.1f} MiB (fresh process: {reference:.1f}), "
        f"{per_sample:.2f} MiB/sample"
    )
    assert resident > 40  # at least its 11.7 M float32 weights (44.6 MiB)
    assert abs(resident - reference) <= AGREEMENT * reference


def test_per_sample_is_the_least_squares_slope() -> None:
    assert per_sample_slope([1, 2, 3], [2.0, 4.0, 6.0]) == pytest.approx(2.0)
    sizes, peaks = [1, 2, 4, 8], [1.0, 1.5, 3.5, 7.0]
    assert per_sample_slope(sizes, peaks) == pytest.approx(np.polyfit(sizes, peaks, 1)[0])
    assert per_sample_slope([8], [4.0]) == 0.5  # one size: the line through the origin
    assert per_sample_slope([1, 8], [float("nan"), 4.0]) == 0.5
    assert math.isnan(per_sample_slope([], []))


def test_a_profile_becomes_token_costs(
    tiny_rows: dict[str, list[ProfileRow]], tmp_path: Path
) -> None:
    path = tmp_path / "tiny.csv"
    write_csv(tiny_rows["onnx"] + tiny_rows["pytorch"], path)
    (cost,) = read_memory_costs(path, "tiny.csv").values()
    rows = [r[0] for r in tiny_rows.values()]
    # The larger figures of the two backends, MiB; from where it was read.
    assert cost.base == pytest.approx(max(r.resident_mb for r in rows), abs=1e-4)
    assert cost.per_sample == pytest.approx(max(r.per_sample_mb for r in rows), abs=1e-4)
    assert cost.source == "profile tiny.csv"


def test_a_profile_without_memory_columns_is_refused_by_name(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"  # as profiles were written before memory was measured
    old.write_text(
        "workload,backend,precision,device,batch_size,threads,mean_ms,peak_mem_mb\n"
        "tiny,onnx,fp32,cpu,1,1,0.2,0.0\n"
    )
    with pytest.raises(ValueError, match=re.escape("tokens.profile: old.csv: no resident_mb")):
        read_memory_costs(old, "old.csv")
    with pytest.raises(ValueError, match=re.escape("missing.csv: file not found")):
        read_memory_costs(tmp_path / "missing.csv", "missing.csv")
