"""`compare.png`: per job class, SLO attainment and P99 latency against offered load.

What tells policies apart is how each class fares as load grows, so those are
the four panels (attainment and P99, interactive and batch). Policies that
behave alike draw the same line: each policy's points are shifted a little
along the load axis and have their own colour, marker and dash, so no line can
hide another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless, like every other plot of the runner

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from loadgen.plot_axes import label_log_axis

CLASSES: tuple[str, ...] = ("interactive", "batch")
_STYLES: tuple[tuple[str, str, str], ...] = (  # colour, marker, dash per policy
    ("#1f77b4", "o", "-"),
    ("#d62728", "s", "--"),
    ("#2ca02c", "^", "-."),
    ("#9467bd", "D", ":"),
    ("#ff7f0e", "v", "-"),
    ("#8c564b", "P", "--"),
)


def _values(rows: Sequence[Mapping[str, Any]], column: str, scale: float) -> np.ndarray:
    return np.array([np.nan if r[column] is None else scale * r[column] for r in rows], float)


def _shift_between_policies(loads: Sequence[float]) -> float:
    """The shift between neighbouring policies: 8 % of the smallest gap between loads."""
    gaps = np.diff(sorted(set(loads)))
    return 0.08 * float(gaps.min() if gaps.size else 0.2)


def _attainment_axis(ax: plt.Axes, values: np.ndarray, cls: str) -> None:
    """Linear %, zoomed to the data: the differences that matter sit near 100 %."""
    finite = values[np.isfinite(values)]
    low = min(float(finite.min()) if finite.size else 0.0, 99.0)
    bottom = max(0.0, low - 0.08 * (100.0 - low))
    ax.set_ylim(bottom, 100.0 + 0.06 * (100.0 - bottom))
    ax.set_ylabel(f"{cls} jobs within SLO (%)")
    ax.set_title(f"{cls}: SLO attainment")


def _p99_axis(ax: plt.Axes, values: np.ndarray, cls: str, slo: float | None) -> None:
    """Log ms with readable ticks, and the class's SLO as a dashed line."""
    finite = values[np.isfinite(values) & (values > 0)]
    if slo:
        ax.axhline(slo, color="black", ls="--", lw=1)
        finite = np.append(finite, slo)
    if finite.size:
        lo, hi = float(finite.min()) / 1.5, float(finite.max()) * 1.5
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        label_log_axis(ax.yaxis, lo, hi)
    ax.set_ylabel(f"{cls} P99 end-to-end (ms, log)")
    # Of completed jobs: a policy that refuses or sheds many can show a low P99.
    ax.set_title(f"{cls}: P99 of completed jobs" + (f" (SLO {slo:g} ms dashed)" if slo else ""))


def plot_compare(
    rows: Sequence[dict[str, Any]],
    path: Path,
    title: str = "",
    slo_ms: Mapping[str, float | None] | None = None,
) -> Path:
    """Write `compare_figure` to `path` (PNG)."""
    fig = compare_figure(rows, title, slo_ms)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_figure(
    rows: Sequence[dict[str, Any]],
    title: str = "",
    slo_ms: Mapping[str, float | None] | None = None,
) -> Figure:
    """Four panels (attainment and P99 per class) vs load, one styled series per policy."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharex=True)
    policies = list(dict.fromkeys(r["scheduler"] for r in rows))
    loads = sorted({r["load"] for r in rows})
    shift = _shift_between_policies(loads)
    columns: dict[str, list[np.ndarray]] = {}
    for i, policy in enumerate(policies):
        colour, marker, dash = _STYLES[i % len(_STYLES)]
        mine = sorted((r for r in rows if r["scheduler"] == policy), key=lambda r: r["load"])
        x = np.array([r["load"] for r in mine]) + (i - (len(policies) - 1) / 2) * shift
        style = {"color": colour, "marker": marker, "ls": dash, "lw": 1.6, "ms": 7}
        for col, cls in enumerate(CLASSES):
            for row, (column, scale) in enumerate(
                ((f"{cls}_slo_attainment", 100.0), (f"{cls}_p99_ms", 1.0))
            ):
                values = _values(mine, column, scale)
                columns.setdefault(column, []).append(values)
                axes[row][col].plot(x, values, label=policy, **style)
    for col, cls in enumerate(CLASSES):
        _attainment_axis(axes[0][col], np.concatenate(columns[f"{cls}_slo_attainment"]), cls)
        slo = (slo_ms or {}).get(cls)
        _p99_axis(axes[1][col], np.concatenate(columns[f"{cls}_p99_ms"]), cls, slo)
        axes[1][col].set_xlabel("offered load (fraction of unbatched capacity)")
        axes[1][col].set_xticks(loads, [f"{load:g}" for load in loads])
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(
        (f"Scheduler comparison — {title}" if title else "Scheduler comparison")
        + f"\n(each policy shifted by {shift:.3g} along load so equal results stay visible; "
        "all ran the same arrivals at each load)",
        y=0.99,
    )
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.935), ncol=len(labels))
    fig.tight_layout()
    fig.subplots_adjust(top=0.84)  # below the two-line title and the legend
    return fig
