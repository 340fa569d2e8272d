"""The building blocks every panel of the mlws dashboard shares (build_dashboard.py and
admission_panels.py): the datasource, the rate window, queries, thresholds and the common
time-series settings, so that every panel looks and reads the same."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

#: The datasource uid of provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "mlws-prometheus"
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
#: Grafana picks a rate window of at least four scrape intervals.
RATE = "$__rate_interval"


def query(expr: str, legend: str, ref_id: str) -> prom_b.Dataquery:
    """A range query on the provisioned Prometheus."""
    return (
        prom_b.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(DATASOURCE)
        .range()
    )


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base colour)."""
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


def timeseries(title: str, description: str, unit: str, width: int = 12) -> ts_b.Panel:
    """A time-series panel with the common settings: datasource, unit, legend as a table."""
    return (
        ts_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.TABLE)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI))
    )


def dashed_thresholds(panel: ts_b.Panel) -> ts_b.Panel:
    """Draw the panel's thresholds as dashed lines."""
    return panel.thresholds_style(
        common_b.GraphThresholdsStyleConfig().mode(common_m.GraphThresholdsStyleMode.DASHED)
    )


def dashed_series(panel: ts_b.Panel, ref_id: str) -> ts_b.Panel:
    """Draw query `ref_id` as a dashed line without fill: a reference such as a limit."""
    return panel.override_by_query(
        ref_id,
        [
            dash_m.DynamicConfigValue(
                id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
            ),
            dash_m.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
        ],
    )
