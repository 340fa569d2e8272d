"""The live service-time log and its profile export, on hand-made service times.

The rows must be the profiler's (same columns, same statistics) plus busy_lanes,
bounded in memory, and readable as training data beside `mlws profile` output.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from mlws.cli import main
from predictor.features import FeatureError, concat_profile_data, load_profile_data
from predictor.profiler import PROFILE_COLUMNS
from server.service_log import (
    LIVE_PROFILE_COLUMNS,
    ServiceKey,
    ServiceLog,
    profile_csv,
    profile_rows,
)
from workloads.specs import RESNET18, TINY

CPU_PROFILE = Path(__file__).resolve().parent.parent / "configs" / "profiles" / "cpu.csv"
SPECS = {TINY.name: TINY, RESNET18.name: RESNET18}


def key(batch_size: int = 4, busy_lanes: int = 0, workload: str = "tiny") -> ServiceKey:
    return ServiceKey(workload, "onnx", "fp32", batch_size, 2, busy_lanes)


def make_log(times_ms: dict[ServiceKey, list[float]], keep: int = 1000) -> ServiceLog:
    log = ServiceLog(keep)
    for k, values in times_ms.items():
        for ms in values:
            log.record(k, ms / 1e3)
    return log


def rows_of(log: ServiceLog, min_repeats: int = 1) -> list[dict]:
    return profile_rows(
        log.snapshot(),
        device_of=lambda backend, precision: "cpu",
        specs=SPECS,
        min_repeats=min_repeats,
    )


def parse(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


# ------------------------------------------------------------------ statistics
def test_a_row_summarises_its_times_as_the_profiler_does() -> None:
    ms = [float(v) for v in range(1, 101)]  # 1 … 100 ms
    (row,) = rows_of(make_log({key(batch_size=4): ms}))
    assert row["repeats"] == 100
    assert row["mean_ms"] == pytest.approx(50.5)
    assert row["p50_ms"] == pytest.approx(50.5)
    assert row["p95_ms"] == pytest.approx(95.05)
    assert row["p99_ms"] == pytest.approx(99.01)
    assert row["std_ms"] == pytest.approx(np.std(ms))
    assert row["samples_per_s"] == pytest.approx(4 * 1e3 / 50.5)
    assert (row["workload"], row["backend"], row["precision"], row["device"]) == (
        "tiny",
        "onnx",
        "fp32",
        "cpu",
    )
    assert (row["batch_size"], row["threads"], row["busy_lanes"]) == (4, 2, 0)
    assert (row["param_count"], row["flops_per_sample"]) == (
        TINY.param_count,
        TINY.flops_per_sample,
    )


def test_busy_lanes_is_part_of_the_key_and_rows_are_sorted() -> None:
    log = make_log(
        {
            key(batch_size=8, busy_lanes=1): [30.0, 34.0],
            key(batch_size=8, busy_lanes=0): [20.0],
            key(batch_size=2, busy_lanes=0): [5.0, 7.0, 9.0],
            key(batch_size=1, workload="resnet18"): [80.0],
        }
    )
    rows = rows_of(log)
    got = [(r["workload"], r["batch_size"], r["busy_lanes"], r["repeats"]) for r in rows]
    assert got == [("resnet18", 1, 0, 1), ("tiny", 2, 0, 3), ("tiny", 8, 0, 1), ("tiny", 8, 1, 2)]
    assert rows[3]["mean_ms"] == pytest.approx(32.0)
    assert rows[0]["param_count"] == RESNET18.param_count


def test_each_key_keeps_only_its_most_recent_times() -> None:
    log = make_log({key(): [1000.0, 1000.0, 1000.0, 1.0, 2.0, 3.0, 4.0, 5.0]}, keep=5)
    assert [len(v) for v in log.snapshot().values()] == [5]
    (row,) = rows_of(log)
    assert row["repeats"] == 5
    assert row["mean_ms"] == pytest.approx(3.0)  # the old 1000 ms runs fell off


def test_keep_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keep must be >= 1"):
        ServiceLog(0)


def test_a_snapshot_is_a_copy() -> None:
    log = make_log({key(): [1.0]})
    snap = log.snapshot()
    log.record(key(), 0.002)
    log.record(key(batch_size=16), 0.003)
    assert snap == {key(): [0.001]}


def test_min_repeats_drops_thin_rows() -> None:
    log = make_log({key(batch_size=1): [1.0, 2.0, 3.0], key(batch_size=2): [4.0]})
    assert [r["batch_size"] for r in rows_of(log, min_repeats=2)] == [1]
    assert rows_of(log, min_repeats=4) == []


# ------------------------------------------------------------------ CSV
def test_the_csv_has_the_profiler_columns_plus_busy_lanes_even_when_empty() -> None:
    assert LIVE_PROFILE_COLUMNS[:-1] == PROFILE_COLUMNS
    assert LIVE_PROFILE_COLUMNS[-1] == "busy_lanes"
    header, rows = parse(profile_csv([]))
    assert header == list(LIVE_PROFILE_COLUMNS)
    assert rows == []


def test_the_csv_rounds_like_the_profiler_and_leaves_memory_empty() -> None:
    log = make_log({key(batch_size=3, busy_lanes=1): [1.234567, 2.0]})
    header, (row,) = parse(profile_csv(rows_of(log)))
    assert header == list(LIVE_PROFILE_COLUMNS)
    assert row["p50_ms"] == "1.6173"  # (1.234567 + 2) / 2, 4 decimals
    assert row["peak_mem_mb"] == ""
    assert row["busy_lanes"] == "1"


def test_the_export_is_training_data(tmp_path: Path) -> None:
    log = make_log(
        {
            key(batch_size=1): [0.5, 0.6],
            key(batch_size=4, busy_lanes=0): [1.0, 1.1],
            key(batch_size=4, busy_lanes=1): [1.6, 1.8],
        }
    )
    live = tmp_path / "live.csv"
    live.write_text(profile_csv(rows_of(log)))

    data = load_profile_data(live)
    assert list(data.busy_lanes) == [0, 0, 1]
    assert list(data.threads) == [2, 2, 2]
    assert list(data.param_count) == [TINY.param_count] * 3

    both = load_profile_data([CPU_PROFILE, live])
    profiled = load_profile_data(CPU_PROFILE)
    assert len(both) == len(profiled) + 3
    assert list(both.busy_lanes) == [0] * len(profiled) + [0, 0, 1]  # no column: 0
    assert set(both.workload) == {*profiled.workload, "tiny"}


def test_concatenation_keeps_the_latency_columns_every_part_has() -> None:
    a = load_profile_data([{"workload": "tiny", "backend": "onnx", "batch_size": 1, "mean_ms": 1}])
    b = load_profile_data(
        [{"workload": "tiny", "backend": "onnx", "batch_size": 2, "mean_ms": 2, "p95_ms": 3}]
    )
    both = concat_profile_data([a, b])
    assert list(both.stats) == ["mean_ms"]
    assert list(both.stat("mean_ms")) == [1.0, 2.0]
    with pytest.raises(FeatureError, match="no profile rows"):
        concat_profile_data([])


@pytest.mark.parametrize("joined", [True, False], ids=["comma-separated", "repeated"])
def test_predictor_train_takes_several_profiles(
    tmp_path: Path, joined: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    log = make_log({key(batch_size=n): [0.1 * n, 0.12 * n] for n in (1, 2, 4, 8)})
    live = tmp_path / "live.csv"
    live.write_text(profile_csv(rows_of(log)))
    files = [str(CPU_PROFILE), str(live)]
    if joined:
        args = ["--profiles", ",".join(files)]
    else:
        args = ["--profiles", files[0], "--profiles", files[1]]
    out = tmp_path / "p.mlws"
    assert main(["predictor", "train", *args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    n = len(load_profile_data(CPU_PROFILE)) + 4
    assert f"on {n} rows" in printed
    assert "tiny" in printed
    assert out.is_file()
