"""trace.csv and summary.json on a hand-made job list with hand-computed numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from loadgen.report import (
    TRACE_COLUMNS,
    JobArrays,
    format_summary,
    summarize,
    write_summary,
    write_trace,
)
from scheduling.job import Job


def make_job(
    job_id: int,
    job_class: str,
    samples: int,
    arrival: float,
    start: float | None,
    end: float | None,
    outcome: str = "ok",
) -> Job:
    slo = 0.1 if job_class == "interactive" else 1.0
    job = Job(job_id, "resnet18", "onnx", "fp32", job_class, samples, arrival, arrival + slo)
    job.enqueue = arrival
    job.start, job.end, job.outcome = start, end, outcome
    if start is not None:
        job.lane, job.microbatch_id = job_id % 2, job_id
    return job


@pytest.fixture
def jobs() -> list[Job]:
    """Interactive waits 10/50/0 ms, e2e 30/150/20 ms, one shed; batch waits 200/600 ms."""
    return [
        make_job(0, "interactive", 1, 0.0, 0.010, 0.030),  # e2e 30, met
        make_job(1, "interactive", 1, 1.0, 1.050, 1.150),  # e2e 150, violated
        make_job(2, "interactive", 1, 2.0, 2.000, 2.020),  # e2e 20, met
        make_job(3, "interactive", 1, 3.0, None, None, "shed"),  # violation
        make_job(4, "batch", 16, 0.5, 0.700, 1.000),  # e2e 500, met
        make_job(5, "batch", 32, 1.5, 2.100, 2.700),  # e2e 1200, violated
    ]


def test_trace_has_one_row_per_job_and_the_columns(tmp_path: Path, jobs: list[Job]) -> None:
    path = write_trace(jobs, tmp_path / "trace.csv")
    with path.open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == TRACE_COLUMNS
        rows = list(reader)
    assert len(rows) == len(jobs)
    first = rows[0]
    assert first["job_id"] == "0" and first["class"] == "interactive"
    assert float(first["wait_ms"]) == pytest.approx(10.0)
    assert float(first["service_ms"]) == pytest.approx(20.0)
    assert float(first["e2e_ms"]) == pytest.approx(30.0)
    assert float(first["slo_ms"]) == pytest.approx(100.0)
    assert first["slo_met"] == "true" and first["outcome"] == "ok" and first["lane"] == "0"
    assert rows[1]["slo_met"] == "false"
    shed = rows[3]
    assert shed["outcome"] == "shed" and shed["slo_met"] == "false"
    for key in ("start_s", "end_s", "wait_ms", "e2e_ms", "lane", "microbatch_id"):
        assert shed[key] == ""
    assert float(shed["deadline_s"]) == pytest.approx(3.1)
    assert rows[5]["batch_size"] == "32"


def test_summary_numbers(jobs: list[Job]) -> None:
    s = summarize(jobs, {"name": "hand"}, 10.0)
    assert s["jobs"] == 6 and s["completed"] == 5 and s["samples"] == 52
    assert s["outcomes"] == {"ok": 5, "shed": 1}
    assert s["slo"] == {
        "met": 3,
        "violations": 3,
        "attainment": pytest.approx(0.5),
        "violation_rate": pytest.approx(0.5),
    }
    assert s["throughput"]["jobs_per_s"] == pytest.approx(0.5)
    assert s["throughput"]["samples_per_s"] == pytest.approx(5.1)  # 1+1+1+16+32 over 10 s
    # overall e2e of completed jobs: 20, 30, 150, 500, 1200 -> P50 = 150
    assert s["latency_ms"]["e2e"]["p50"] == pytest.approx(150.0)

    inter = s["classes"]["interactive"]
    assert inter["jobs"] == 4 and inter["completed"] == 3
    assert inter["slo"]["attainment"] == pytest.approx(0.5)
    assert inter["slo"]["violation_rate"] == pytest.approx(0.5)
    assert inter["slo_ms"] == 100.0  # rounded to the µs: no 100.00000000000009
    assert s["slo_ms"] == {"interactive": 100.0, "batch": 1000.0}  # per class, never one
    e2e = inter["latency_ms"]["e2e"]
    # sorted 20, 30, 150; linear interpolation between ranks (numpy default)
    assert e2e["p50"] == pytest.approx(30.0)
    assert e2e["p95"] == pytest.approx(30.0 + 0.9 * 120.0)
    assert e2e["p99"] == pytest.approx(30.0 + 0.98 * 120.0)
    assert e2e["mean"] == pytest.approx(200.0 / 3)
    assert inter["latency_ms"]["wait"]["max"] == pytest.approx(50.0)
    assert inter["throughput"]["samples_per_s"] == pytest.approx(0.3)

    batch = s["classes"]["batch"]
    assert batch["slo"]["attainment"] == pytest.approx(0.5)
    assert batch["latency_ms"]["service"]["p50"] == pytest.approx(450.0)  # 300 and 600
    assert batch["throughput"]["samples_per_s"] == pytest.approx(4.8)
    # mean batch wait / mean interactive wait = 400 / 20
    assert s["batch_to_interactive_wait_ratio"] == pytest.approx(20.0)
    assert "fairness" not in s
    assert s["config"] == {"name": "hand"}


def test_slos_are_the_configured_values_exactly() -> None:
    # (1.7 + 0.1) - 1.7 s is 100.00000000000009 ms: the summary must not print that.
    jobs = [make_job(0, "interactive", 1, 1.7, 1.71, 1.75), make_job(1, "batch", 4, 1.7, 1.8, 2.0)]
    configured = {"slo_ms": {"interactive": 100.0, "batch": 1000.0}}
    s = summarize(jobs, configured, 1.0)
    assert s["slo_ms"] == {"interactive": 100.0, "batch": 1000.0}
    assert s["classes"]["interactive"]["slo_ms"] == 100.0
    text = format_summary(s)
    assert "slo(100ms)" in text and "slo(1000ms)" in text and "100.0000" not in text
    assert "mean batch wait ÷ mean interactive wait = 10.00" in text


def test_undefined_values_are_null_in_json(tmp_path: Path) -> None:
    only_batch = [make_job(0, "batch", 8, 0.0, 0.0, 0.2)]
    s = summarize(only_batch, {}, 1.0, extra={"policy": "fifo"})
    assert s["batch_to_interactive_wait_ratio"] is None  # no interactive jobs
    assert s["slo_ms"] == {"interactive": None, "batch": 1000.0}
    inter = s["classes"]["interactive"]
    assert inter["jobs"] == 0 and inter["slo"]["attainment"] is None
    assert inter["latency_ms"]["e2e"]["p99"] is None
    assert s["run"] == {"policy": "fifo"}
    loaded = json.loads(write_summary(s, tmp_path / "summary.json").read_text())
    assert loaded["classes"]["interactive"]["slo_ms"] is None


def test_zero_interactive_wait_makes_the_wait_ratio_undefined() -> None:
    jobs = [make_job(0, "interactive", 1, 0.0, 0.0, 0.01), make_job(1, "batch", 4, 0.0, 0.1, 0.2)]
    assert summarize(jobs, {}, 1.0)["batch_to_interactive_wait_ratio"] is None


def test_job_arrays_match_job_properties(jobs: list[Job]) -> None:
    a = JobArrays.from_jobs(jobs)
    assert a.slo_met.tolist() == [j.slo_met for j in jobs]
    assert math.isnan(a.e2e_ms[3])
    assert a.e2e_ms[5] == pytest.approx(1200.0)
