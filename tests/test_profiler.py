"""Profiler: real runs of the tiny model on both backends, CSV shape and contents."""

from __future__ import annotations

import csv
from pathlib import Path

from predictor.profiler import ProfileSettings, profile, write_csv

REQUIRED = [
    "workload",
    "backend",
    "precision",
    "batch_size",
    "threads",
    "mean_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "samples_per_s",
    "peak_mem_mb",
    "resident_mb",
    "per_sample_mb",
]
FAST = ProfileSettings(warmup=1, min_repeats=3, min_time_s=0.0, max_time_s=1.0)


def test_profile_writes_one_row_per_combination(tmp_path: Path, onnx_dir: Path) -> None:
    seen: list[tuple[int, int]] = []
    rows = profile(
        ["tiny"],
        ["pytorch", "onnx"],
        ["fp32"],
        [1, 4],
        [1, 2],
        settings=FAST,
        onnx_dir=onnx_dir,
        progress=lambda done, total, row: seen.append((done, total)),
    )
    out = tmp_path / "p.csv"
    assert write_csv(rows, out) == 8
    assert seen[-1] == (8, 8)
    with out.open() as f:
        reader = csv.DictReader(f)
        assert set(REQUIRED) <= set(reader.fieldnames or [])
        table = list(reader)
    combos = {(r["backend"], int(r["batch_size"]), int(r["threads"])) for r in table}
    assert combos == {(b, n, t) for b in ("pytorch", "onnx") for n in (1, 4) for t in (1, 2)}
    for r in table:
        p50, p95, p99 = float(r["p50_ms"]), float(r["p95_ms"]), float(r["p99_ms"])
        assert 0 < p50 <= p95 <= p99
        assert int(r["repeats"]) >= 3
        expected_rate = int(r["batch_size"]) * 1e3 / float(r["mean_ms"])
        assert abs(float(r["samples_per_s"]) - expected_rate) <= 1e-3 * expected_rate + 0.01
        assert float(r["peak_mem_mb"]) >= 0 and float(r["resident_mb"]) > 0
        assert float(r["per_sample_mb"]) == float(r["per_sample_mb"])  # fitted: not empty
        assert r["precision"] == "fp32" and r["device"] == "cpu"
