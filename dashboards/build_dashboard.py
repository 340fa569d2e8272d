"""Generate the gateway's Grafana dashboard, `dashboards/grafana/dashboards/mlws.json`.

Run ``.venv/bin/python dashboards/build_dashboard.py`` after changing a panel: it rewrites
the JSON that Grafana provisions (``--check`` only compares and exits 1 when it differs).
tests/test_dashboards.py fails while the committed JSON differs from what this script
builds, and tests/test_prometheus.py runs every query below against a real Prometheus
scraping a real gateway.

The dashboard is built with grafana-foundation-sdk (Grafana's typed builders, pinned to
the Grafana 11.6 schema), so a misspelt option is an AttributeError here, not a panel that
silently ignores it. Series names and labels are those of server/metrics.py. The shared
panel settings are in panel_kit.py, the Admission row's panels in admission_panels.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import heatmap as heatmap_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models import prometheus as prom_m

HERE = Path(__file__).resolve().parent
# dashboards/ is a folder of scripts, not a package: put it on the path so that the sibling
# modules import alike when this file runs as a script and when a test loads it by path.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from admission_panels import (  # noqa: E402
    auth_failures,
    compute_saved,
    forecast_accuracy,
    goodput,
    late_share,
    rejections,
    sheds,
)
from panel_kit import (  # noqa: E402
    DATASOURCE,
    RATE,
    dashed_series,
    dashed_thresholds,
    query,
    thresholds,
    timeseries,
)

#: Where Grafana's file provider (provisioning/dashboards/mlws.yml) reads dashboards from.
OUTPUT = HERE / "grafana" / "dashboards" / "mlws.json"

DASHBOARD_UID = "mlws-gateway"

#: Latency SLO per class, seconds (the gateway's slo_ms).
SLO_S: dict[str, float] = {"interactive": 0.1, "batch": 1.0}
#: The attainment objective the alert rules use (dashboards/prometheus/rules.yml).
OBJECTIVE = 0.99


# --- panels -------------------------------------------------------------------------------


def request_rate() -> ts_b.Panel:
    return (
        timeseries(
            "Request rate by class and outcome",
            "Requests per second by final outcome: ok, rejected (refused at admission; the "
            "Admission row says why), shed, error, cancelled (client gone), invalid (4xx "
            "before scheduling).",
            "reqps",
        )
        .stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
        .with_target(
            query(
                f"sum by (class, outcome) (rate(mlws_requests_total[{RATE}])) > 0",
                "{{class}} {{outcome}}",
                "A",
            )
        )
    )


def slo_attainment() -> ts_b.Panel:
    good = " or ".join(
        f'sum by (class) (rate(mlws_request_duration_seconds_bucket{{class="{c}", '
        f'le=~"{le}"}}[{RATE}]))'
        for c, le in (("interactive", "0.1"), ("batch", "1|1\\\\.0"))
    )
    valid = f'sum by (class) (rate(mlws_requests_total{{outcome!~"invalid|cancelled"}}[{RATE}]))'
    finished = f'sum by (class) (rate(mlws_requests_total{{outcome!="invalid"}}[{RATE}]))'
    violations = f"sum by (class) (rate(mlws_slo_violations_total[{RATE}]))"
    return (
        dashed_thresholds(
            timeseries(
                "SLO attainment by class",
                "Share of valid requests answered ok within the class SLO (100 ms "
                "interactive, 1 s batch), read off the latency histogram; rejected, shed and "
                "failed requests count as misses. 'per request SLO' uses each request's own "
                "slo_ms (1 - violations / finished). Dashed line: the 99 % objective.",
                "percentunit",
            )
            .max(1)
            .thresholds(thresholds((None, "red"), (OBJECTIVE, "green")))
        )
        .with_target(query(f"({good}) / {valid}", "{{class}}", "A"))
        .with_target(query(f"1 - {violations} / {finished}", "{{class}} per request SLO", "B"))
    )


def latency(job_class: str) -> ts_b.Panel:
    slo = SLO_S[job_class]
    panel = dashed_thresholds(
        timeseries(
            f"{job_class.capitalize()} latency P50 / P95 / P99",
            f"End-to-end latency (arrival to completion) of successful {job_class} requests. "
            f"Dashed red line: the {slo * 1000:g} ms SLO.",
            "s",
        )
        .thresholds(thresholds((None, "green"), (slo, "red")))
        .scale_distribution(
            common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.LOG).log(10)
        )
    )
    for ref_id, q in zip("ABC", (0.5, 0.95, 0.99), strict=True):
        expr = (
            f"histogram_quantile({q}, sum by (le) (rate("
            f'mlws_request_duration_seconds_bucket{{class="{job_class}"}}[{RATE}])))'
        )
        panel = panel.with_target(query(expr, f"P{round(q * 100)}", ref_id))
    return panel


def wait_vs_service() -> ts_b.Panel:
    panel = timeseries(
        "P99 queue wait vs service time by class",
        "Where the time goes: waiting in the queue (arrival to first dispatch) versus "
        "running on a lane (first dispatch to completion).",
        "s",
    ).scale_distribution(
        common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.LOG).log(10)
    )
    for ref_id, (metric, name) in zip(
        "AB",
        (("mlws_queue_wait_seconds", "wait"), ("mlws_service_seconds", "service")),
        strict=True,
    ):
        expr = f"histogram_quantile(0.99, sum by (le, class) (rate({metric}_bucket[{RATE}])))"
        panel = panel.with_target(query(expr, "{{class}} " + name, ref_id))
    return panel


def queue_depth() -> ts_b.Panel:
    panel = (
        timeseries(
            "Queue depth by class",
            "Jobs waiting per class. Dashed: the queue limit recorded in rules.yml "
            "(mlws:queue_limit, keep it in step with scheduler.queue_limit); a full queue "
            "answers 429.",
            "short",
        )
        .min(0)
        .with_target(query("sum by (class) (mlws_queue_depth)", "{{class}}", "A"))
        .with_target(query("mlws:queue_limit", "{{class}} limit", "B"))
    )
    return dashed_series(panel, "B")


def tokens() -> ts_b.Panel:
    return (
        timeseries(
            "Memory tokens in use vs capacity",
            "Tokens held by running micro-batches (base + 4 per sample, x0.7 at fp16) "
            "against the pool's capacity; a dispatch starts only when its tokens fit.",
            "short",
        )
        .min(0)
        .with_target(query("sum(mlws_tokens_in_use)", "in use", "A"))
        .with_target(query("sum(mlws_tokens_capacity)", "capacity", "B"))
    )


def lane_utilisation() -> ts_b.Panel:
    return (
        timeseries(
            "Lane utilisation",
            "Share of scrapes that found each lane running a micro-batch (mlws_lane_busy "
            "averaged over the window: a sampled estimate) and the mean over all lanes.",
            "percentunit",
        )
        .min(0)
        .max(1)
        .with_target(
            query(
                f"avg by (lane, node) (avg_over_time(mlws_lane_busy[{RATE}]))",
                "lane {{lane}} on {{node}}",
                "A",
            )
        )
        .with_target(query(f"avg(avg_over_time(mlws_lane_busy[{RATE}]))", "all lanes", "B"))
    )


def lost_dispatches() -> ts_b.Panel:
    return (
        timeseries(
            "Dispatches lost with a node",
            "Dispatches whose lane went with its node (Ray lanes), per node lost: each is "
            "retried once on another lane if its deadline allows, else its requests get 503.",
            "ops",
        )
        .min(0)
        .with_target(
            query(f"sum by (node) (rate(mlws_lost_dispatches_total[{RATE}]))", "node {{node}}", "A")
        )
    )


def model_swaps() -> ts_b.Panel:
    return (
        timeseries(
            "Model swaps",
            "Under a lane budget (scheduler.tokens.lane_budget): models loaded onto a lane "
            "that did not hold them, and models evicted to make room, per model. Steady "
            "swapping means the lanes' budgets hold too few of the models in use.",
            "ops",
        )
        .min(0)
        .with_target(
            query(f"sum by (model) (rate(mlws_model_loads_total[{RATE}]))", "{{model}} loads", "A")
        )
        .with_target(
            query(
                f"sum by (model) (rate(mlws_model_evictions_total[{RATE}]))",
                "{{model}} evictions",
                "B",
            )
        )
    )


def model_load_time() -> ts_b.Panel:
    return (
        timeseries(
            "Model load time",
            "P95 of a model's load and warm-up on a lane that did not hold it (lane "
            "budgets): what a request for a cold model waits before its run.",
            "s",
        )
        .min(0)
        .with_target(
            query(
                "histogram_quantile(0.95, sum by (le, model) "
                f"(rate(mlws_model_load_seconds_bucket[{RATE}])))",
                "{{model}} P95",
                "A",
            )
        )
    )


def microbatch_heatmap() -> heatmap_b.Panel:
    return (
        heatmap_b.Panel()
        .title("Micro-batch size distribution")
        .description(
            "Dispatched micro-batches per size bucket (samples) and window: how well batch "
            "requests are merged."
        )
        .datasource(DATASOURCE)
        .unit("short")
        .height(8)
        .span(12)
        .calculate(False)
        .scale_distribution(
            common_b.ScaleDistributionConfig().type(common_m.ScaleDistribution.LINEAR)
        )
        .hide_from(common_b.HideSeriesConfig().legend(False).tooltip(False).viz(False))
        .y_axis(heatmap_b.YAxisConfig().unit("short").axis_label("samples"))
        .cell_values(heatmap_b.CellValues().unit("short"))
        .color(
            heatmap_b.HeatmapColorOptions()
            .mode(heatmap_m.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(heatmap_m.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
        )
        .with_target(
            query(
                f"sum by (le) (increase(mlws_microbatch_size_samples_bucket[{RATE}]))",
                "{{le}}",
                "A",
            ).format(prom_m.PromQueryFormat.HEATMAP)
        )
    )


def microbatch_mean() -> ts_b.Panel:
    return (
        timeseries(
            "Mean and P95 micro-batch size by model",
            "Samples per dispatched micro-batch: mean and 95th percentile.",
            "short",
        )
        .min(0)
        .with_target(
            query(
                f"sum by (model) (rate(mlws_microbatch_size_samples_sum[{RATE}])) / "
                f"sum by (model) (rate(mlws_microbatch_size_samples_count[{RATE}]))",
                "{{model}} mean",
                "A",
            )
        )
        .with_target(
            query(
                "histogram_quantile(0.95, sum by (le, model) "
                f"(rate(mlws_microbatch_size_samples_bucket[{RATE}])))",
                "{{model}} P95",
                "B",
            )
        )
    )


def predictor_error() -> ts_b.Panel:
    return dashed_thresholds(
        timeseries(
            "Service-time predictor error",
            "(predicted - observed) / observed for the latest dispatch of each model, "
            "backend and lane group. Positive: the scheduler over-estimates service times "
            "(wasted capacity); negative: it under-estimates them (dispatches overrun "
            "max_dispatch_ms, interactive waits grow). Dashed: ±20 %.",
            "percentunit",
            width=12,
        ).thresholds(thresholds((None, "red"), (-0.2, "green"), (0.2, "red")))
    ).with_target(query("mlws_predictor_error_ratio", "{{model}} {{backend}} {{lane_group}}", "A"))


def predictor_residual() -> ts_b.Panel:
    return timeseries(
        "Online correction: observed / predicted",
        "Exponentially weighted ratio of observed to base-predicted service time per "
        "batch-size bucket and lane group; predictions are multiplied by it. 1: the "
        "trained predictor (or online fit) is right; a step means the lanes changed speed "
        "(drift, a noisy neighbour, another thread count); a ratio far from 1 for long: "
        "retrain.",
        "none",
        width=12,
    ).with_target(
        query(
            "mlws_predictor_residual_ratio",
            "{{model}} {{backend}} {{precision}} {{lane_group}} batch {{batch_bucket}}",
            "A",
        )
    )


# --- dashboard ----------------------------------------------------------------------------


def build() -> dash_m.Dashboard:
    """The dashboard model, every panel (rows included) with its own id from 1."""
    model = (
        dash_b.Dashboard("mlws gateway")
        .uid(DASHBOARD_UID)
        .description(
            "SLO-aware inference gateway: traffic, admission (rejections, sheds, goodput, "
            "completion forecast, access control), latency against the 100 ms / 1 s SLOs, "
            "queues, memory tokens, lanes, micro-batching and the service-time predictor."
        )
        .tags(["mlws", "inference", "slo"])
        .editable()
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .time("now-15m", "now")
        .refresh("5s")
        .timezone("browser")
        .with_row(dash_b.Row("Traffic and SLO"))
        .with_panel(request_rate())
        .with_panel(slo_attainment())
        .with_row(dash_b.Row("Admission"))
        .with_panel(rejections())
        .with_panel(goodput())
        .with_panel(sheds())
        .with_panel(compute_saved())
        .with_panel(forecast_accuracy())
        .with_panel(late_share())
        .with_panel(auth_failures())
        .with_row(dash_b.Row("Latency"))
        .with_panel(latency("interactive"))
        .with_panel(latency("batch"))
        .with_panel(wait_vs_service())
        .with_panel(queue_depth())
        .with_row(dash_b.Row("Capacity"))
        .with_panel(tokens())
        .with_panel(lane_utilisation())
        .with_panel(lost_dispatches())
        .with_panel(model_swaps())
        .with_panel(model_load_time())
        .with_panel(microbatch_heatmap())
        .with_panel(microbatch_mean())
        .with_row(dash_b.Row("Predictor"))
        .with_panel(predictor_error())
        .with_panel(predictor_residual())
        .build()
    )
    # The builders leave ids unset (rows get 0); Grafana links a panel by its id.
    for panel_id, panel in enumerate(model.panels or [], start=1):
        panel.id_val = panel_id
    return model


def render() -> str:
    """The dashboard as the JSON text written to `OUTPUT` (stable: sorted keys, newline)."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    parser.add_argument(
        "--check", action="store_true", help="compare with --out instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'differs; run without --check'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
