"""The dashboard's Admission row: what the gateway refuses and sheds, the in-SLO goodput it
delivers, how far its completion forecast (on which admission decides) is off, and what
access control turns away before admission.

Series of server/metrics.py: mlws_rejections_total, mlws_goodput_total,
mlws_shed_saved_seconds_total, mlws_completion_ratio and mlws_auth_failures_total.
build_dashboard.py places these panels; the alerts on the same series are in
prometheus/rules.yml.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common as common_m
from panel_kit import RATE, dashed_series, dashed_thresholds, query, thresholds, timeseries

#: Completion later than this × its forecast counts as late: the drift alert's median
#: threshold (rules.yml) and an exact bucket boundary of mlws_completion_ratio.
LATE_FACTOR = 1.25


def rejections() -> ts_b.Panel:
    return (
        timeseries(
            "Rejections by class and reason",
            "Requests refused at admission per second: predicted_late (429, the forecast "
            "finish was past the deadline), queue_full (429), too_large (413, never fits the "
            "memory tokens), unavailable (503). Each is also a 'rejected' outcome in the "
            "request rate. Interactive predicted_late for long: the deployment is undersized "
            "(add capacity; `mlws capacity` sizes it).",
            "reqps",
        )
        .min(0)
        .stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
        .with_target(
            query(
                f"sum by (class, reason) (rate(mlws_rejections_total[{RATE}]))",
                "{{class}} {{reason}}",
                "A",
            )
        )
    )


def goodput() -> ts_b.Panel:
    panel = (
        timeseries(
            "In-SLO goodput vs request rate by class",
            "Jobs per second answered ok within their own SLO (each request's slo_ms) "
            "against the valid requests (every outcome but invalid and cancelled, dashed). "
            "The gap is work refused, shed, answered late or failed.",
            "reqps",
        )
        .min(0)
        .with_target(
            query(f"sum by (class) (rate(mlws_goodput_total[{RATE}]))", "{{class}} in SLO", "A")
        )
        .with_target(
            query(
                "sum by (class) "
                f'(rate(mlws_requests_total{{outcome!~"invalid|cancelled"}}[{RATE}]))',
                "{{class}} requests",
                "B",
            )
        )
    )
    return dashed_series(panel, "B")


def sheds() -> ts_b.Panel:
    return (
        timeseries(
            "Shed jobs by class",
            "Admitted jobs dropped before running per second (503 shed) because they could "
            "no longer meet their deadline. Each is also a 'shed' outcome in the request "
            "rate and counts against the SLO.",
            "reqps",
        )
        .min(0)
        .with_target(
            query(
                f'sum by (class) (rate(mlws_requests_total{{outcome="shed"}}[{RATE}]))',
                "{{class}}",
                "A",
            )
        )
    )


def compute_saved() -> ts_b.Panel:
    return (
        timeseries(
            "Wasted compute avoided by shedding",
            "Predicted service time of the shed jobs per second of wall time "
            "(mlws_shed_saved_seconds_total): lane-seconds per second, i.e. how many lanes' "
            "worth of work shedding kept free for jobs that can still make their deadline.",
            "short",
        )
        .min(0)
        .axis_label("lanes")
        .stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
        .with_target(
            query(f"sum by (class) (rate(mlws_shed_saved_seconds_total[{RATE}]))", "{{class}}", "A")
        )
    )


def forecast_accuracy() -> ts_b.Panel:
    panel = dashed_thresholds(
        timeseries(
            "Completion forecast: actual / forecast",
            "Time from arrival to completion divided by the admission forecast of it, for "
            "admitted jobs answered ok (late ones too): 1 = exact. Above 1 they end later "
            "than forecast: the service-time model under-predicts and admission lets in work "
            f"that ends late (alert at a median over {LATE_FACTOR} for 15 m). Below 1 "
            "admission is too cautious and refuses work that would have made it. "
            f"Dashed: {1 / LATE_FACTOR:g} and {LATE_FACTOR}.",
            "none",
        ).thresholds(thresholds((None, "orange"), (1 / LATE_FACTOR, "green"), (LATE_FACTOR, "red")))
    )
    for ref_id, q in zip("AB", (0.5, 0.9), strict=True):
        expr = (
            f"histogram_quantile({q}, sum by (le, class) "
            f"(rate(mlws_completion_ratio_bucket[{RATE}])))"
        )
        panel = panel.with_target(query(expr, f"{{{{class}}}} P{round(q * 100)}", ref_id))
    return panel


def late_share() -> ts_b.Panel:
    late = (
        f'1 - sum by (class) (rate(mlws_completion_ratio_bucket{{le="{LATE_FACTOR}"}}[{RATE}])) '
        f"/ sum by (class) (rate(mlws_completion_ratio_count[{RATE}]))"
    )
    return dashed_thresholds(
        timeseries(
            f"Jobs finished later than forecast x {LATE_FACTOR}",
            "Share of admitted jobs answered ok whose completion came after "
            f"{LATE_FACTOR} x its forecast: the tail of the forecast error, which the median "
            f"hides. Dashed: 50 %, where the median crosses {LATE_FACTOR} (the drift alert).",
            "percentunit",
        )
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.5, "red")))
    ).with_target(query(late, "{{class}}", "A"))


def auth_failures() -> ts_b.Panel:
    return (
        timeseries(
            "Access control refusals by reason",
            "Requests per second refused before reaching a route (server/auth.py): "
            "missing_token and invalid_token (401), wrong_role (403: a valid token without "
            "the route's role). Always 0 without auth.tokens. A steady invalid_token rate is "
            "someone guessing, or a client with a rotated-out token.",
            "reqps",
            width=24,
        )
        .min(0)
        .stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
        .with_target(
            query(f"sum by (reason) (rate(mlws_auth_failures_total[{RATE}]))", "{{reason}}", "A")
        )
    )
