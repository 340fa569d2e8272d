"""Tests for server.metrics: every series exists, with the right labels and values."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from scheduling.job import Job
from server.metrics import LATENCY_BUCKETS, OUTCOMES, GatewayMetrics

#: Family name as the text parser reports it (counters lose "_total") → type, label names.
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "mlws_request_duration_seconds": ("histogram", {"model", "class"}),
    "mlws_queue_wait_seconds": ("histogram", {"model", "class"}),
    "mlws_service_seconds": ("histogram", {"model", "class"}),
    "mlws_microbatch_size_samples": ("histogram", {"model"}),
    "mlws_queue_depth": ("gauge", {"class"}),
    "mlws_tokens_in_use": ("gauge", set()),
    "mlws_tokens_capacity": ("gauge", set()),
    "mlws_lane_busy": ("gauge", {"lane", "node"}),
    "mlws_slo_violations": ("counter", {"class"}),
    "mlws_requests": ("counter", {"model", "class", "outcome"}),
    "mlws_predictor_error_ratio": ("gauge", {"model", "backend", "lane_group"}),
    "mlws_rejections": ("counter", {"model", "class", "reason"}),
    "mlws_shed_saved_seconds": ("counter", {"model", "class"}),
    "mlws_completion_ratio": ("histogram", {"class"}),
    "mlws_goodput": ("counter", {"model", "class"}),
}


def make_job(
    *,
    job_class: str = "interactive",
    arrival: float = 10.0,
    start: float | None = 10.02,
    end: float | None = 10.045,
    slo: float = 0.1,
    outcome: str | None = "ok",
    workload: str = "tiny",
) -> Job:
    return Job(
        id=1,
        workload=workload,
        backend="onnxruntime",
        precision="fp32",
        job_class=job_class,  # type: ignore[arg-type]
        samples=1,
        arrival=arrival,
        deadline=arrival + slo,
        start=start,
        end=end,
        outcome=outcome,  # type: ignore[arg-type]
    )


def samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered text, keyed by (sample name, labels)."""
    text, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: GatewayMetrics, name: str, **labels: Any) -> float:
    return samples(metrics)[(name, frozenset((k, str(v)) for k, v in labels.items()))]


def test_every_family_exists_with_its_labels() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    m.set_lane_busy(0, "local", True)
    m.set_prediction_error("tiny", "onnxruntime", "default", 0.1)
    text, _ = m.render()
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no series"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    assert not {n for n in families if not n.startswith("mlws_")}


def test_series_exist_at_zero_after_register_model() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    got = samples(m)
    for job_class in ("interactive", "batch"):
        for outcome in OUTCOMES:
            assert (
                value(
                    m, "mlws_requests_total", model="tiny", outcome=outcome, **{"class": job_class}
                )
                == 0
            )
        for hist in ("mlws_request_duration_seconds", "mlws_queue_wait_seconds"):
            key = (f"{hist}_count", frozenset({("model", "tiny"), ("class", job_class)}))
            assert got[key] == 0
        assert value(m, "mlws_slo_violations_total", **{"class": job_class}) == 0
        assert value(m, "mlws_queue_depth", **{"class": job_class}) == 0
    assert got[("mlws_microbatch_size_samples_count", frozenset({("model", "tiny")}))] == 0


def test_observe_completion_ok_within_slo() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    m.observe_completion(make_job())
    cls = {"class": "interactive"}
    assert value(m, "mlws_request_duration_seconds_count", model="tiny", **cls) == 1
    assert value(m, "mlws_request_duration_seconds_sum", model="tiny", **cls) == pytest.approx(
        0.045
    )
    assert value(m, "mlws_queue_wait_seconds_sum", model="tiny", **cls) == pytest.approx(0.02)
    assert value(m, "mlws_service_seconds_sum", model="tiny", **cls) == pytest.approx(0.025)
    # 45 ms e2e falls in the 0.05 bucket, not the 0.04 one.
    assert value(m, "mlws_request_duration_seconds_bucket", model="tiny", le="0.05", **cls) == 1
    assert value(m, "mlws_request_duration_seconds_bucket", model="tiny", le="0.04", **cls) == 0
    assert value(m, "mlws_requests_total", model="tiny", outcome="ok", **cls) == 1
    assert value(m, "mlws_slo_violations_total", **cls) == 0


def test_late_and_failed_jobs_are_violations() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    m.observe_completion(make_job(job_class="batch", end=11.5, slo=1.0))  # late ok
    m.observe_completion(make_job(job_class="batch", outcome="shed", start=None, end=None))
    cls = {"class": "batch"}
    assert value(m, "mlws_slo_violations_total", **cls) == 2
    assert value(m, "mlws_requests_total", model="tiny", outcome="ok", **cls) == 1
    assert value(m, "mlws_requests_total", model="tiny", outcome="shed", **cls) == 1
    # Only the ok job has latency observations.
    assert value(m, "mlws_request_duration_seconds_count", model="tiny", **cls) == 1
    assert value(m, "mlws_slo_violations_total", **{"class": "interactive"}) == 0
    with pytest.raises(ValueError, match="not finished"):
        m.observe_completion(make_job(outcome=None))


def test_count_request_batch_and_gauges() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    m.count_request("tiny", "batch", "invalid")
    m.count_request("tiny", "batch", "invalid")
    m.observe_batch("tiny", 3)
    m.observe_batch("tiny", 32)
    m.set_queue_depth("interactive", 7)
    m.set_tokens(240, 1000)
    m.set_lane_busy(0, "local", True)
    m.set_lane_busy(1, "local", False)
    m.set_prediction_error("tiny", "onnxruntime", "default", -0.25)
    assert (
        value(m, "mlws_requests_total", model="tiny", outcome="invalid", **{"class": "batch"}) == 2
    )
    assert value(m, "mlws_microbatch_size_samples_count", model="tiny") == 2
    assert value(m, "mlws_microbatch_size_samples_sum", model="tiny") == 35
    assert value(m, "mlws_microbatch_size_samples_bucket", model="tiny", le="4.0") == 1
    assert value(m, "mlws_queue_depth", **{"class": "interactive"}) == 7
    assert value(m, "mlws_tokens_in_use") == 240
    assert value(m, "mlws_tokens_capacity") == 1000
    assert value(m, "mlws_lane_busy", lane=0, node="local") == 1
    assert value(m, "mlws_lane_busy", lane=1, node="local") == 0
    error = value(
        m, "mlws_predictor_error_ratio", model="tiny", backend="onnxruntime", lane_group="default"
    )
    assert error == -0.25


def test_unregistered_models_collapse_to_unknown() -> None:
    m = GatewayMetrics()
    for i in range(5):
        m.count_request(f"client-typo-{i}", "interactive", "invalid")
    assert (
        value(
            m, "mlws_requests_total", model="unknown", outcome="invalid", **{"class": "interactive"}
        )
        == 5
    )
    assert not any(("model", "client-typo-0") in labels for _, labels in samples(m))
    assert "unknown" in m.models


def test_bad_labels_raise() -> None:
    m = GatewayMetrics()
    with pytest.raises(ValueError, match="outcome"):
        m.count_request("tiny", "batch", "timeout")
    with pytest.raises(ValueError, match="class"):
        m.count_request("tiny", "bulk", "ok")
    with pytest.raises(ValueError, match="class"):
        m.set_queue_depth("bulk", 1)


def test_buckets_are_fine_around_the_slos() -> None:
    assert {0.09, 0.1, 0.11, 0.9, 1.0, 1.1} <= set(LATENCY_BUCKETS)
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_two_instances_do_not_collide() -> None:
    a, b = GatewayMetrics(), GatewayMetrics()
    a.register_model("tiny")
    b.register_model("tiny")
    a.count_request("tiny", "interactive", "shed")
    assert a.registry is not b.registry
    cls = {"class": "interactive"}
    assert value(a, "mlws_requests_total", model="tiny", outcome="shed", **cls) == 1
    assert value(b, "mlws_requests_total", model="tiny", outcome="shed", **cls) == 0
    shared = CollectorRegistry()
    c = GatewayMetrics(shared)
    assert c.registry is shared


def test_admission_series_count_rejections_sheds_forecasts_and_goodput() -> None:
    m = GatewayMetrics()
    m.register_model("tiny")
    m.count_rejection("tiny", "interactive", "predicted_late")
    m.count_rejection("nope", "interactive", "queue_full")  # an unregistered model name
    with pytest.raises(ValueError, match="unknown reason"):
        m.count_rejection("tiny", "interactive", "bored")
    ok = make_job(end=10.045)  # 45 ms e2e, forecast 50 ms: ratio 0.9
    ok.predicted_end = 10.05
    m.observe_completion(ok)
    shed = make_job(outcome="shed", start=None, end=10.02)
    shed.saved_s = 0.03
    m.observe_completion(shed)
    late = make_job(end=10.2)  # ok but past its 100 ms SLO: not goodput
    m.observe_completion(late)
    cls = {"class": "interactive"}
    assert value(m, "mlws_rejections_total", model="tiny", reason="predicted_late", **cls) == 1
    assert value(m, "mlws_rejections_total", model="unknown", reason="queue_full", **cls) == 1
    assert value(m, "mlws_goodput_total", model="tiny", **cls) == 1
    assert value(m, "mlws_shed_saved_seconds_total", model="tiny", **cls) == pytest.approx(0.03)
    assert value(m, "mlws_completion_ratio_count", **cls) == 1
    assert value(m, "mlws_completion_ratio_bucket", le="0.9", **cls) == 1
    assert value(m, "mlws_completion_ratio_bucket", le="0.8", **cls) == 0


def test_a_lane_that_moves_or_leaves_loses_its_series() -> None:
    m = GatewayMetrics()
    m.set_lane_busy(0, "local", False)
    m.set_lane_busy(0, "node-a", True)  # placed where its worker runs
    m.set_lane_busy(1, "node-b", True)
    m.forget_lane(1)  # its node left
    m.count_lost_dispatch("node-b")
    lanes = {k for k in samples(m) if k[0] == "mlws_lane_busy"}
    assert lanes == {("mlws_lane_busy", frozenset({("lane", "0"), ("node", "node-a")}))}
    assert value(m, "mlws_lost_dispatches_total", node="node-b") == 1
    assert value(m, "mlws_lost_dispatches_total", node="node-a") == 0  # a node with lanes
