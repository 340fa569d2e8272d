"""`mlws compare`: every policy on the same trace per load; csv, md and png."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from loadgen.compare import (
    COMPARE_COLUMNS,
    POLICIES,
    compare_markdown,
    parse_loads,
    parse_policies,
    run_compare,
    with_policy,
)
from loadgen.compare_plot import compare_figure
from loadgen.config import ConfigError, ExperimentConfig

REQUIRED = {
    "scheduler",
    "load",
    "interactive_slo_attainment",
    "batch_slo_attainment",
    "interactive_p99_ms",
    "batch_p99_ms",
    "throughput_samples_per_s",
    "batch_throughput_samples_per_s",
    "arrival_rate_jobs_per_s",
    "batch_to_interactive_wait_ratio",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_config(**overrides: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "tiny_cmp",
        "duration_s": 10,
        "load": 0.5,
        "batch_sizes": {"batch": {"min": 4, "max": 8}},
        "scheduler": {"microbatch": {"enabled": True, "window_ms": 5}},
        "service_time": {"fixed": {"resnet18": {"base_ms": 5, "per_sample_ms": 3}}},
    }
    data.update(overrides)
    return ExperimentConfig.model_validate(data)


def test_compare_writes_every_policy_by_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loads = [0.3, 0.9]
    rows = run_compare(tiny_config(), list(POLICIES), loads, tmp_path)

    with (tmp_path / "compare.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert set(reader.fieldnames or ()) >= REQUIRED
        assert "fairness" not in (reader.fieldnames or ())
        table = list(reader)
    assert {(r["scheduler"], float(r["load"])) for r in table} == {
        (p, load) for p in POLICIES for load in loads
    }
    assert len(table) == len(rows) == 8
    for load in loads:
        # one trace per load: every policy saw exactly the same jobs at the same rate
        same_load = [r for r in table if float(r["load"]) == load]
        assert len({r["jobs"] for r in same_load}) == 1
        assert len({r["arrival_rate_jobs_per_s"] for r in same_load}) == 1
    for r in table:
        assert 0 <= float(r["interactive_slo_attainment"]) <= 1
        assert float(r["batch_throughput_samples_per_s"]) > 0

    md = (tmp_path / "compare.md").read_text().splitlines()
    assert md[0].startswith("| scheduler | load |") and len(md) == 2 + 8
    assert md[0].endswith("| mean batch wait ÷ mean interactive wait |")
    png = (tmp_path / "compare.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 30_000  # four panels, not an empty figure
    assert len(list((tmp_path / "summaries").glob("*.json"))) == 8
    summary = json.loads((tmp_path / "summaries" / "fifo-load0.3.json").read_text())
    assert summary["run"]["policy"] == "fifo"
    assert summary["slo_ms"] == {"interactive": 100.0, "batch": 1000.0}
    printed = capsys.readouterr()
    assert "| dynamic | 0.9 |" in printed.out
    # progress off a terminal: one plain line per run on stderr, naming what it found
    assert "[1/8] fifo at load 0.3: interactive " in printed.err
    assert "[8/8] dynamic at load 0.9: " in printed.err


def test_compare_plot_keeps_equal_policies_apart() -> None:
    """Per class attainment and P99 vs load; equal policies side by side, not stacked."""
    rows = []
    for policy in ("fifo", "batch_aware"):
        for load in (0.3, 0.6, 0.9):
            row: dict[str, Any] = dict.fromkeys(COMPARE_COLUMNS)
            row.update(scheduler=policy, load=load, interactive_slo_attainment=0.99)
            row.update(batch_slo_attainment=0.9, interactive_p99_ms=80.0, batch_p99_ms=900.0)
            rows.append(row)
    fig = compare_figure(rows, "t", {"interactive": 100.0, "batch": 1000.0})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "interactive: SLO attainment",
        "batch: SLO attainment",
        "interactive: P99 of completed jobs (SLO 100 ms dashed)",
        "batch: P99 of completed jobs (SLO 1000 ms dashed)",
    ]
    for ax in fig.axes:
        policies = {ln.get_label(): ln for ln in ax.get_lines()}
        fifo, batch_aware = policies["fifo"], policies["batch_aware"]
        assert list(fifo.get_ydata()) == list(batch_aware.get_ydata())  # the same numbers...
        gap = np.asarray(batch_aware.get_xdata()) - np.asarray(fifo.get_xdata())
        assert np.all((gap > 0) & (gap < 0.1))  # ...drawn apart, still at their load
        assert fifo.get_marker() != batch_aware.get_marker()
        assert fifo.get_color() != batch_aware.get_color()
    p99 = fig.axes[2]
    assert p99.get_yscale() == "log"
    assert "100" in [t.get_text() for t in p99.get_yticklabels()]  # 1-2-5 labels, not 10^2
    plt.close(fig)


def test_markdown_formats_undefined_values() -> None:
    row = dict.fromkeys(COMPARE_COLUMNS)
    row.update(scheduler="fifo", load=0.5, interactive_slo_attainment=0.875, jobs=3)
    line = compare_markdown([row]).splitlines()[2]
    assert line.startswith("| fifo | 0.5 | n/a | 3 | 87.5% |")


def test_with_policy_keeps_everything_else() -> None:
    base = tiny_config()
    other = with_policy(base, "fifo")
    assert other.scheduler.policy == "fifo"
    assert other.scheduler.microbatch == base.scheduler.microbatch
    assert other.duration_s == base.duration_s


def test_list_parsing() -> None:
    assert parse_policies(" fifo , dynamic ") == ["fifo", "dynamic"]
    assert parse_loads("0.3,0.9") == [0.3, 0.9]
    with pytest.raises(ConfigError, match="unknown policy 'edf'"):
        parse_policies("fifo,edf")
    with pytest.raises(ConfigError, match=r"outside \(0, 10\]"):
        parse_loads("0")
    with pytest.raises(ConfigError, match="at least one load"):
        parse_loads(" , ")
