"""ProfileTable: interpolation, extrapolation, floors and errors that name what exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictor.profile_table import MIN_SERVICE_S, ProfileError, ProfileTable

HEADER = (
    "workload,backend,precision,batch_size,threads,"
    "mean_ms,p50_ms,p95_ms,p99_ms,samples_per_s,peak_mem_mb"
)


def write_profile(path: Path, rows: list[tuple]) -> Path:
    """A profiler-format CSV from (workload, backend, precision, batch, threads, mean, p50) rows."""
    lines = [HEADER]
    for w, b, p, batch, threads, mean, p50 in rows:
        lines.append(f"{w},{b},{p},{batch},{threads},{mean},{p50},{mean * 1.1},{mean * 1.2},1,100")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    return write_profile(
        tmp_path / "p.csv",
        [
            ("resnet18", "onnx", "fp32", 1, 1, 10.0, 9.0),
            ("resnet18", "onnx", "fp32", 4, 1, 40.0, 36.0),
            ("resnet18", "onnx", "fp32", 8, 1, 60.0, 54.0),
            ("resnet18", "onnx", "fp32", 1, 2, 6.0, 5.0),
            ("resnet18", "onnx", "fp32", 8, 2, 30.0, 27.0),
            ("resnet50", "pytorch", "fp32", 2, 1, 50.0, 45.0),
            ("resnet50", "pytorch", "fp32", 4, 1, 90.0, 81.0),
        ],
    )


def test_measured_points_are_exact(profile: Path) -> None:
    t = ProfileTable.from_csv(profile, threads=1)
    assert t.predict("resnet18", "onnx", "fp32", 1) == pytest.approx(0.010)
    assert t.predict("resnet18", "onnx", "fp32", 4) == pytest.approx(0.040)
    assert t.predict("resnet18", "onnx", "fp32", 8) == pytest.approx(0.060)


def test_interpolates_piecewise_linearly(profile: Path) -> None:
    t = ProfileTable.from_csv(profile, threads=1)
    assert t.predict("resnet18", "onnx", "fp32", 2) == pytest.approx(0.020)  # 10 + 30 * 1/3
    assert t.predict("resnet18", "onnx", "fp32", 6) == pytest.approx(0.050)  # 40 + 20 * 2/4


def test_extrapolates_from_last_two_points(profile: Path) -> None:
    t = ProfileTable.from_csv(profile, threads=1)
    # slope of 4 -> 8 is 5 ms/sample: 16 samples = 60 + 8 * 5 = 100 ms
    assert t.predict("resnet18", "onnx", "fp32", 16) == pytest.approx(0.100)


def test_extrapolates_below_range_and_never_below_floor(tmp_path: Path) -> None:
    p = write_profile(
        tmp_path / "p.csv",
        [("tiny", "onnx", "fp32", 4, 1, 10.0, 10.0), ("tiny", "onnx", "fp32", 8, 1, 30.0, 30.0)],
    )
    t = ProfileTable.from_csv(p)
    # slope 5 ms/sample below 4: batch 3 = 5 ms; batch 1 would be -5 ms -> floor
    assert t.predict("tiny", "onnx", "fp32", 3) == pytest.approx(0.005)
    assert t.predict("tiny", "onnx", "fp32", 1) == MIN_SERVICE_S


def test_single_point_scales_with_samples(tmp_path: Path) -> None:
    p = write_profile(tmp_path / "p.csv", [("tiny", "onnx", "fp32", 2, 1, 4.0, 4.0)])
    t = ProfileTable.from_csv(p)
    assert t.predict("tiny", "onnx", "fp32", 6) == pytest.approx(0.012)


def test_threads_and_stat_select_the_column(profile: Path) -> None:
    two = ProfileTable.from_csv(profile, threads=2)
    assert two.predict("resnet18", "onnx", "fp32", 8) == pytest.approx(0.030)
    p50 = ProfileTable.from_csv(profile, threads=1, stat="p50_ms")
    assert p50.predict("resnet18", "onnx", "fp32", 4) == pytest.approx(0.036)
    assert p50.batch_sizes("resnet50", "pytorch", "fp32") == [2, 4]


def test_predictions_are_memoised(profile: Path) -> None:
    t = ProfileTable.from_csv(profile, threads=1)
    first = t.predict("resnet18", "onnx", "fp32", 5)
    assert t.predict("resnet18", "onnx", "fp32", 5) is first


def test_missing_combo_names_what_the_file_has(profile: Path) -> None:
    t = ProfileTable.from_csv(profile, threads=1)
    with pytest.raises(ProfileError) as err:
        t.predict("vit_b_16", "onnx", "fp32", 1)
    message = str(err.value)
    assert "workload=vit_b_16" in message and "threads=1" in message
    assert "resnet18/onnx/fp32" in message and "resnet50/pytorch/fp32" in message
    with pytest.raises(ProfileError, match="resnet18/onnx/fp16"):
        t.require([("resnet18", "onnx", "fp16"), ("resnet18", "onnx", "fp32")])


def test_thread_errors(profile: Path) -> None:
    with pytest.raises(ProfileError, match=r"several thread counts \(1, 2\)"):
        ProfileTable.from_csv(profile)
    with pytest.raises(ProfileError, match="no rows with threads=4; the file has threads 1, 2"):
        ProfileTable.from_csv(profile, threads=4)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        ProfileTable.from_csv(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("workload,backend,precision,batch_size\nresnet18,onnx,fp32,1\n")
    with pytest.raises(ProfileError, match=r"missing column.*threads, mean_ms"):
        ProfileTable.from_csv(bad)
    bad.write_text(HEADER + "\nresnet18,onnx,fp32,x,1,10,10,10,10,1,1\n")
    with pytest.raises(ProfileError, match=r"bad.csv:2: .*must be numbers"):
        ProfileTable.from_csv(bad)
    bad.write_text(HEADER + "\nresnet18,onnx,fp32,1,1,-3,10,10,10,1,1\n")
    with pytest.raises(ProfileError, match="mean_ms > 0"):
        ProfileTable.from_csv(bad)
    dup = write_profile(
        tmp_path / "dup.csv",
        [("tiny", "onnx", "fp32", 1, 1, 1.0, 1.0), ("tiny", "onnx", "fp32", 1, 1, 2.0, 2.0)],
    )
    with pytest.raises(ProfileError, match="duplicate row"):
        ProfileTable.from_csv(dup)
    with pytest.raises(ProfileError, match="unknown stat"):
        ProfileTable.from_csv(dup, stat="p42_ms")
    header_only = tmp_path / "empty.csv"
    header_only.write_text(HEADER + "\n")
    with pytest.raises(ProfileError, match="no rows"):
        ProfileTable.from_csv(header_only)


def test_shipped_profile_covers_the_standard_scenario() -> None:
    t = ProfileTable.from_csv(Path(__file__).parent.parent / "configs/profiles/cpu.csv", threads=1)
    t.require([(w, b, "fp32") for w in ("resnet18", "resnet50") for b in ("onnx", "pytorch")])
    small, large = (t.predict("resnet18", "onnx", "fp32", n) for n in (1, 32))
    assert 0 < small < large
