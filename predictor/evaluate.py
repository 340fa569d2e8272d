"""How wrong the latency predictor is: splits, metrics and a plot.

- **MAPE**: mean over rows of |predicted − measured| / measured of the trained
  statistic (mean_ms by default), in percent.
- **Coverage of the q-quantile**: the fraction of measured *runs* that took at
  most the predicted q-quantile. A profile row holds a distribution of runs
  summarised by p50/p95/p99, so each row contributes the fraction of its runs
  below the prediction, read off the row's interpolated run CDF
  (`predictor.features.run_cdf`); rows count equally. A well-calibrated 0.95
  quantile covers about 95 % of runs. Rows without percentiles count 1 when
  their statistic is at or below the prediction, else 0. `row_coverage` is the
  stricter companion: the fraction of rows whose own p95 (p50, p99 for
  q = 0.5, 0.99) is at or below the prediction.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from predictor.features import FeatureError, ProfileData, run_cdf

if TYPE_CHECKING:
    from predictor.latency import LatencyPredictor

#: The percentile column that `row_coverage` compares a q-quantile with.
_PERCENTILE_COLUMNS = {0.5: "p50_ms", 0.95: "p95_ms", 0.99: "p99_ms"}


def select_rows(
    data: ProfileData,
    *,
    batch_sizes: Iterable[int] | None = None,
    workloads: Iterable[str] | None = None,
    exclude_workloads: Iterable[str] | None = None,
    what: str = "selection",
) -> ProfileData:
    """The rows at the given batch sizes and of the given workloads; an error if none are left."""
    keep = np.ones(len(data), dtype=bool)
    if batch_sizes is not None:
        keep &= np.isin(data.batch_size, list(batch_sizes))
    for names, inside in ((workloads, True), (exclude_workloads, False)):
        if names is None:
            continue
        names = list(names)
        unknown = sorted(set(names) - set(data.workload.astype(str)))
        if unknown:  # a typo must not silently select (or leave in) everything
            raise FeatureError(f"no rows for workload(s) {', '.join(unknown)}")
        keep &= np.isin(data.workload, names) == inside
    if not keep.any():
        sizes = ", ".join(str(b) for b in np.unique(data.batch_size))
        raise FeatureError(f"the {what} leaves no rows (the profile has batch sizes {sizes})")
    return data.subset(keep)


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean absolute percentage error, percent."""
    return float(np.mean(np.abs(predicted - measured) / measured) * 100.0)


def run_coverage(predicted_q: np.ndarray, data: ProfileData, stat: str) -> np.ndarray:
    """Per row, the estimated fraction of its runs at or below `predicted_q` (module docstring)."""
    s = data.stats
    if all(c in s for c in ("p50_ms", "p95_ms", "p99_ms")):
        return run_cdf(predicted_q, s["p50_ms"], s["p95_ms"], s["p99_ms"])
    return (data.stat(stat) <= predicted_q).astype(float)


def evaluate_predictor(
    predictor: LatencyPredictor, data: ProfileData, q: float = 0.95
) -> dict[str, Any]:
    """MAPE and quantile coverage overall and per workload/backend, JSON-ready."""
    measured = data.stat(predictor.stat)
    predicted = np.asarray(predictor.predict(data))
    predicted_q = np.asarray(predictor.predict_quantile(data, q))
    covered = run_coverage(predicted_q, data, predictor.stat)
    column = _PERCENTILE_COLUMNS.get(q)
    strict = (data.stats[column] <= predicted_q) if column in data.stats else None
    groups = data.groups()
    per_group: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups.tolist())):
        rows = groups == g
        per_group[g] = {
            "mape": round(mape(predicted[rows], measured[rows]), 3),
            "coverage": round(float(covered[rows].mean()), 4),
            "rows": int(rows.sum()),
        }
    result: dict[str, Any] = {
        "mape": round(mape(predicted, measured), 3),
        "coverage": round(float(covered.mean()), 4),
        "quantile": q,
        "stat": predictor.stat,
        "rows": len(data),
        "per_group": per_group,
    }
    if strict is not None:
        result["row_coverage"] = round(float(strict.mean()), 4)
    return result


def format_report(result: dict[str, Any]) -> str:
    """Human lines: overall MAPE and coverage, then one line per workload/backend."""
    q = result["quantile"]
    lines = [
        f"rows {result['rows']}  MAPE {result['mape']:.2f} % ({result['stat']})  "
        f"coverage of the {q:g} quantile {result['coverage']:.3f} of runs"
        + (f", {result['row_coverage']:.3f} of rows" if "row_coverage" in result else "")
    ]
    width = max((len(g) for g in result["per_group"]), default=0)
    for g, r in result["per_group"].items():
        lines.append(
            f"  {g:<{width}}  MAPE {r['mape']:6.2f} %  coverage {r['coverage']:.3f}  "
            f"rows {r['rows']}"
        )
    return "\n".join(lines)


def describe_rows(data: ProfileData) -> str:
    """`18 rows: resnet18, resnet50 at batch 2, 8, 32`: which rows an evaluation used."""
    workloads = ", ".join(sorted(set(data.workload.astype(str).tolist())))
    sizes = ", ".join(str(int(b)) for b in np.unique(data.batch_size))
    return f"{len(data)} rows: {workloads} at batch {sizes}"


def plot_predictions(
    predictor: LatencyPredictor, data: ProfileData, path: str | Path, q: float = 0.95
) -> Path:
    """Write `predictions_figure` to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = predictions_figure(predictor, data, q)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predictions_figure(predictor: LatencyPredictor, data: ProfileData, q: float = 0.95) -> Any:
    """Predicted vs measured on log-log axes: one marker per workload/backend, y = x line.

    Filled markers: the mean prediction against the measured statistic; hollow
    markers of the same shape: the q-quantile prediction against the measured
    p95 (when the rows have it), to show the margin the tail estimate keeps. The
    title names the rows plotted (the test set) and the error on them.
    """
    import matplotlib.pyplot as plt

    measured = data.stat(predictor.stat)
    predicted = np.asarray(predictor.predict(data))
    predicted_q = np.asarray(predictor.predict_quantile(data, q))
    groups = data.groups()
    fig, ax = plt.subplots(figsize=(7.6, 6.6))
    markers = "osD^v<>pPX*h"
    for i, g in enumerate(sorted(set(groups.tolist()))):
        rows = groups == g
        marker = markers[i % len(markers)]
        ax.scatter(measured[rows], predicted[rows], marker=marker, label=g, zorder=3)
        if "p95_ms" in data.stats:
            ax.scatter(
                data.stats["p95_ms"][rows],
                predicted_q[rows],
                marker=marker,
                facecolors="none",
                edgecolors="grey",
                zorder=2,
            )
    lo = float(min(measured.min(), predicted.min())) / 1.5
    hi = float(max(measured.max(), predicted.max(), predicted_q.max())) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="y = x")
    for factor in (0.9, 1.1):
        ax.plot([lo, hi], [lo * factor, hi * factor], color="grey", linestyle=":", linewidth=1)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    _label(ax, predictor, data, q)
    fig.tight_layout()
    return fig


def _label(ax: Any, predictor: LatencyPredictor, data: ProfileData, q: float) -> None:
    """Axes named per marker kind; the title names the test set and the error on it."""
    hollow = "p95_ms" in data.stats
    ax.set_xlabel(
        f"measured (ms): filled = {predictor.stat}" + (", hollow = p95_ms" if hollow else "")
    )
    ax.set_ylabel(
        f"predicted (ms): filled = {predictor.stat}"
        + (f", hollow = q{q:g} quantile" if hollow else "")
    )
    result = evaluate_predictor(predictor, data, q)
    ax.set_title(
        f"{predictor.model_type} on the test set: {describe_rows(data)}\n"
        f"MAPE {result['mape']:.1f} % ({predictor.stat}); q{q:g} covers "
        f"{100 * result['coverage']:.1f} % of runs; dotted ±10 %",
        fontsize="medium",
    )
    ax.legend(fontsize="small", title="workload / backend", title_fontsize="small")
