"""The experiment runner end to end on small configs in tmp_path."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.arrivals import arrival_rate, poisson_arrivals
from loadgen.config import ConfigError, load_experiment_config
from loadgen.experiment import (
    build_service_model,
    fresh_run_dir,
    make_run_id,
    run_experiment,
    simulate_run,
)
from loadgen.plots import PLOT_NAMES
from loadgen.report import TRACE_COLUMNS
from predictor.profile_table import ProfileTable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER = (
    "workload,backend,precision,batch_size,threads,"
    "mean_ms,p50_ms,p95_ms,p99_ms,samples_per_s,peak_mem_mb"
)
PROFILE = (
    HEADER
    + """
resnet18,onnx,fp32,1,1,4.0,4.0,4.4,4.8,250,100
resnet18,onnx,fp32,8,1,18.0,18.0,19.8,21.6,444,120
resnet18,onnx,fp32,32,1,66.0,66.0,72.6,79.2,485,200
"""
)


def small_config(tmp_path: Path, **overrides: Any) -> Path:
    """A 20-second experiment on a tiny profile written next to the config."""
    (tmp_path / "profile.csv").write_text(PROFILE)
    data: dict[str, Any] = {
        "name": "small",
        "duration_s": 20,
        "load": 0.7,
        "interactive_ratio": 0.3,
        "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"min": 4, "max": 16}},
        "service_time": {"profile": "profile.csv", "threads": 1},
        "scheduler": {"policy": "priority_slo", "lanes": 2},
        "jitter": 0.1,
        "seed": 3,
    }
    data.update(overrides)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_end_to_end_writes_trace_summary_config_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_experiment_config(small_config(tmp_path))
    out = run_experiment(config, tmp_path / "results", run_id="run1")
    assert out == tmp_path / "results" / "run1"

    with (out / "trace.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["jobs"] == summary["run"]["arrivals"] > 100
    assert tuple(rows[0]) == TRACE_COLUMNS
    assert {r["class"] for r in rows} == {"interactive", "batch"}

    for key in ("latency_ms", "slo", "throughput", "outcomes", "classes", "config"):
        assert key in summary
    assert summary["batch_to_interactive_wait_ratio"] > 1  # priority_slo: batch waits longer
    assert "fairness" not in summary
    # per class, exactly as configured (the defaults here), never one figure for both
    assert summary["slo_ms"] == {"interactive": 100.0, "batch": 1000.0}
    assert summary["classes"]["interactive"]["slo_ms"] == 100.0
    for cls in ("interactive", "batch"):
        group = summary["classes"][cls]
        assert set(group["latency_ms"]) == {"e2e", "wait", "service"}
        assert set(group["latency_ms"]["e2e"]) >= {"p50", "p95", "p99"}
        assert 0 <= group["slo"]["attainment"] <= 1
    assert summary["config"]["scheduler"]["policy"] == "priority_slo"
    assert summary["run"]["run_id"] == "run1"
    # load 0.7 of capacity: the arrival rate sits below what two lanes serve
    assert summary["run"]["arrival_rate_jobs_per_s"] == pytest.approx(
        0.7 * summary["run"]["capacity_jobs_per_s"]
    )

    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(PLOT_NAMES)
    for name in PLOT_NAMES:
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    copy = yaml.safe_load((out / "config.yaml").read_text())
    assert copy["name"] == "small" and copy["scheduler"]["lanes"] == 2

    captured = capsys.readouterr()
    printed = captured.out
    assert "interactive" in printed and "p99=" in printed and str(out) in printed
    assert "slo(100ms)" in printed and "slo(1000ms)" in printed
    # progress off a terminal: plain lines on stderr, the last one at 100 %
    assert f"small: {summary['jobs']:,} arrivals over 20 s" in captured.err
    assert f"simulate: 100% ({summary['jobs']:,}/{summary['jobs']:,} arrivals" in captured.err
    assert "writing trace.csv, summary.json, config.yaml and plots/" in captured.err


def test_same_seed_same_result_and_runs_never_overwrite(tmp_path: Path) -> None:
    config = load_experiment_config(small_config(tmp_path, duration_s=5))
    model = build_service_model(config)
    rate = arrival_rate(config, model)
    runs = [
        simulate_run(config, poisson_arrivals(config, rate, 5, config.seed), model)
        for _ in range(2)
    ]
    assert runs[0].summary == runs[1].summary
    assert fresh_run_dir(tmp_path, "x").name == "x"
    assert fresh_run_dir(tmp_path, "x").name == "x-2"


def test_fixed_service_time_and_arrival_rate(tmp_path: Path) -> None:
    path = small_config(
        tmp_path,
        load=None,
        arrival_rate=30,
        duration_s=5,
        service_time={"fixed": {"resnet18": {"base_ms": 2, "per_sample_ms": 0.5}}},
    )
    data = {k: v for k, v in yaml.safe_load(path.read_text()).items() if v is not None}
    path.write_text(yaml.safe_dump(data))
    config = load_experiment_config(path)
    model = build_service_model(config)
    assert model.predict("resnet18", "onnx", "fp32", 4) == pytest.approx(0.004)
    assert arrival_rate(config, model) == 30
    run = simulate_run(config, poisson_arrivals(config, 30, 5, 0), model)
    assert run.summary["slo"]["attainment"] == pytest.approx(1.0)  # far below capacity
    assert len(run.result.jobs) == run.summary["jobs"] > 100


def test_predictor_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.mlws").write_bytes(b"x")
    pred = load_experiment_config(small_config(tmp_path, predictor={"path": "p.mlws"}))
    with pytest.raises(ConfigError, match=r"predictor\.path: the learned predictor"):
        run_experiment(pred, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_profile_lacking_the_mix_is_a_config_error(tmp_path: Path) -> None:
    config = load_experiment_config(small_config(tmp_path, backends={"pytorch": 1}))
    with pytest.raises(
        ConfigError, match=r"service_time.profile: .*no rows for resnet18/pytorch/fp32"
    ):
        build_service_model(config)


def test_build_service_model_from_profile(tmp_path: Path) -> None:
    model = build_service_model(load_experiment_config(small_config(tmp_path)))
    assert isinstance(model, ProfileTable)
    assert model.predict("resnet18", "onnx", "fp32", 8) == pytest.approx(0.018)


def test_run_id_format(tmp_path: Path) -> None:
    config = load_experiment_config(small_config(tmp_path))
    assert make_run_id(config, datetime(2025, 1, 2, 3, 4, 5)) == "small-20250102-030405-3"
