"""`mode: live`: a real gateway started by the runner, loaded open-loop over HTTP."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from loadgen.config import load_experiment_config
from loadgen.experiment import run_experiment
from loadgen.live import gateway_config_for
from loadgen.plots import PLOT_NAMES
from loadgen.sim_vs_live_plot import PLOT_NAME as SIM_VS_LIVE
from server.config import parse_gateway_config


def live_config(tmp_path: Path) -> Path:
    data = {
        "name": "live-tiny",
        "mode": "live",
        "duration_s": 3,
        "arrival_rate": 20,
        "interactive_ratio": 0.5,
        "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"min": 2, "max": 8}},
        "workload_mix": {"tiny": 1},
        "backends": {"onnx": 1},
        "service_time": {"fixed": {"tiny": {"base_ms": 0.5, "per_sample_ms": 0.05}}},
        "scheduler": {
            "policy": "priority_slo",
            "lanes": 2,
            "microbatch": {"enabled": True, "window_ms": 5},
        },
        "lanes": {"threads_per_lane": 1},
        "seed": 5,
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_gateway_config_mirrors_the_experiment(tmp_path: Path) -> None:
    config = load_experiment_config(live_config(tmp_path))
    gateway = parse_gateway_config(gateway_config_for(config))
    assert [m.name for m in gateway.models] == ["tiny"]
    assert gateway.lanes.count == 2 and gateway.lanes.threads_per_lane == 1
    assert gateway.scheduler.policy == "priority_slo"
    assert gateway.scheduler.microbatch.window_ms == 5
    assert gateway.max_request_samples == 8
    assert gateway.seed == 5 and gateway.slo_ms == config.slo_ms
    assert gateway.serving() == config.serving()  # the serving part, passed through as it is


def test_live_run_writes_trace_summary_plots_and_sim_vs_live(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_experiment_config(live_config(tmp_path))
    out = run_experiment(config, tmp_path / "results")
    with (out / "trace.csv").open() as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["jobs"] >= 30  # ~60 arrivals, every one answered once
    assert {r["outcome"] for r in rows} == {"ok"}
    assert all(float(r["e2e_ms"]) > 0 and r["lane"] in ("0", "1") for r in rows)
    assert set(summary["classes"]) == {"interactive", "batch"}
    twin = summary["sim_vs_live"]
    assert set(twin) == {"interactive", "batch"}
    assert twin["interactive"]["p99_ms"]["live"] > 0
    assert twin["interactive"]["p99_ms"]["diff"] is not None
    for name in (*PLOT_NAMES, SIM_VS_LIVE):
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG"), name
        assert (out / "plots" / name).stat().st_size > 10_000, name
    err = capsys.readouterr().err
    # off a terminal the steps are plain lines: the gateway's start, then the answers
    assert "starting a gateway for the live run" in err and "gateway ready at http" in err
    n = summary["jobs"]
    assert f": 100% ({n}/{n} answers" in err
    assert f"simulated twin: 100% ({n}/{n} arrivals" in err
