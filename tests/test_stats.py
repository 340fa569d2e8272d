"""Tests for server.stats: hand-computed percentiles and attainment on a fake clock."""

from __future__ import annotations

import json
from itertools import count

import pytest

from scheduling.job import Job
from server.stats import SlidingWindowStats

_ids = count()


def make_job(
    e2e_ms: float | None = 50.0,
    *,
    queue_ms: float = 10.0,
    job_class: str = "interactive",
    slo_ms: float = 100.0,
    outcome: str | None = "ok",
    arrival: float = 0.0,
) -> Job:
    """A finished job whose e2e and queue wait are the given milliseconds."""
    ok = outcome == "ok"
    return Job(
        id=next(_ids),
        workload="tiny",
        backend="onnxruntime",
        precision="fp32",
        job_class=job_class,  # type: ignore[arg-type]
        samples=1,
        arrival=arrival,
        deadline=arrival + slo_ms / 1e3,
        start=arrival + queue_ms / 1e3 if ok else None,
        end=arrival + e2e_ms / 1e3 if ok and e2e_ms is not None else None,
        outcome=outcome,  # type: ignore[arg-type]
    )


def test_empty_summary_has_nulls_and_zero_counts() -> None:
    s = SlidingWindowStats(window_s=10.0)
    summary = s.summary(now=100.0)
    assert summary["window_s"] == 10.0
    for job_class in ("interactive", "batch"):
        c = summary["classes"][job_class]
        assert c["count"] == 0 and c["ok"] == 0 and c["rate_per_s"] == 0.0
        assert c["p50_ms"] is None and c["p99_ms"] is None and c["queue_p99_ms"] is None
        assert c["slo_attainment"] is None
        assert c["outcomes"] == {"ok": 0, "shed": 0, "cancelled": 0, "error": 0, "rejected": 0}
    json.dumps(summary)  # JSON-ready as is


def test_percentiles_and_attainment_hand_computed() -> None:
    s = SlidingWindowStats(window_s=10.0)
    # e2e 10, 20, ..., 100 ms (all within the 100 ms SLO), plus one late 150 ms.
    for i, e2e in enumerate([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150]):
        s.record(make_job(e2e, queue_ms=e2e / 10), now=1.0 + i * 0.1)
    s.record(make_job(outcome="shed"), now=2.5)
    s.record(make_job(job_class="batch", e2e_ms=500, slo_ms=1000), now=2.5)
    c = s.summary(now=3.0)["classes"]["interactive"]
    assert c["count"] == 12 and c["ok"] == 11
    assert c["outcomes"]["shed"] == 1 and c["outcomes"]["ok"] == 11
    assert c["rate_per_s"] == pytest.approx(12 / 10)
    # 11 values, linear interpolation: rank q/100 × 10.
    # p50 → rank 5 → 60; p95 → rank 9.5 → 100 + 0.5 × 50 = 125; p99 → rank 9.9 → 145.
    assert c["p50_ms"] == pytest.approx(60.0)
    assert c["p95_ms"] == pytest.approx(125.0)
    assert c["p99_ms"] == pytest.approx(145.0)
    assert c["queue_p99_ms"] == pytest.approx(14.5)
    # 10 ok within SLO out of 12 finished (one late, one shed).
    assert c["slo_attainment"] == pytest.approx(10 / 12)
    b = s.summary(now=3.0)["classes"]["batch"]
    assert b["count"] == 1 and b["p50_ms"] == pytest.approx(500.0) and b["slo_attainment"] == 1.0


def test_only_failures_give_zero_attainment_and_null_latency() -> None:
    s = SlidingWindowStats(window_s=5.0)
    for outcome in ("error", "cancelled", "rejected"):
        s.record(make_job(outcome=outcome), now=1.0)
    c = s.summary(now=1.0)["classes"]["interactive"]
    assert c["count"] == 3 and c["ok"] == 0
    assert c["slo_attainment"] == 0.0
    assert c["p50_ms"] is None and c["queue_p99_ms"] is None


def test_eviction_after_the_window() -> None:
    s = SlidingWindowStats(window_s=10.0)
    s.record(make_job(20), now=0.0)
    s.record(make_job(outcome="error"), now=0.0)
    s.record(make_job(80), now=5.0)
    assert s.summary(now=9.9)["classes"]["interactive"]["count"] == 3
    # An entry recorded at t leaves the window at t + window_s exactly.
    c = s.summary(now=10.0)["classes"]["interactive"]
    assert c["count"] == 1 and c["outcomes"]["error"] == 0
    assert c["p50_ms"] == pytest.approx(80.0) and c["slo_attainment"] == 1.0
    c = s.summary(now=15.0)["classes"]["interactive"]
    assert c["count"] == 0 and c["p50_ms"] is None and c["slo_attainment"] is None


def test_record_evicts_so_memory_stays_bounded() -> None:
    s = SlidingWindowStats(window_s=1.0)
    for i in range(10_000):
        s.record(make_job(10), now=i * 0.01)
    # Only the last second's 100 jobs are held, without a summary call.
    window = s._classes["interactive"]
    assert len(window.finished) == 100 and len(window.ok) == 100


def test_bad_records_raise() -> None:
    s = SlidingWindowStats()
    with pytest.raises(ValueError, match="not finished"):
        s.record(make_job(outcome=None), now=0.0)
    with pytest.raises(ValueError, match="class"):
        s.record(make_job(job_class="bulk"), now=0.0)
    with pytest.raises(ValueError):
        SlidingWindowStats(window_s=0)
