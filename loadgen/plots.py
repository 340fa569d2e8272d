"""The four experiment plots, drawn from a finished job list.

Every figure has one colour per job class, a title, axis labels with units and
a legend. Million-job runs are plotted from quantiles and histograms, never
point by point, so a plot costs the same at 1k and 1M jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: experiments run on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from loadgen.plot_axes import label_log_axis
from loadgen.report import PERCENTILES, JobArrays
from scheduling.job import JOB_CLASSES, Job

CLASS_COLORS: dict[str, str] = {"interactive": "#1f77b4", "batch": "#d62728"}
PLOT_NAMES: tuple[str, ...] = (
    "latency_cdf.png",
    "slo_violations.png",
    "latency_percentiles.png",
    "wait_time_dist.png",
)
#: Points per CDF line: enough for a smooth curve, cheap for a million jobs.
CDF_POINTS = 2000


def _classes(a: JobArrays) -> list[str]:
    """Classes with at least one job, in the canonical order."""
    return [c for c in JOB_CLASSES if a.of_class(c).any()]


def _class_slo_ms(a: JobArrays, cls: str) -> float:
    return float(np.median(a.slo_ms[a.of_class(cls)]))


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def save_figure(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def no_data(ax: plt.Axes) -> None:
    ax.text(0.5, 0.5, "no completed jobs", ha="center", va="center", transform=ax.transAxes)


def cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latencies, fraction ≤ each) of at most CDF_POINTS quantiles of `values` (non-empty)."""
    probs = np.linspace(0.0, 1.0, min(CDF_POINTS, values.size))
    return np.quantile(values, probs), probs


def log_x_if_wide(ax: plt.Axes, lo: float, hi: float) -> None:
    """Interactive and batch latencies differ by 10x or more: a log axis shows both."""
    if hi / lo > 20:
        ax.set_xscale("log")
        label_log_axis(ax.xaxis, lo, hi)


def plot_latency_cdf(a: JobArrays, path: Path, title: str) -> Path:
    """Empirical CDF of end-to-end latency per class, with each class's SLO line."""
    fig, ax = plt.subplots(figsize=(8, 5))
    lo, hi = np.inf, 0.0
    for cls in _classes(a):
        e2e = _finite(a.e2e_ms[a.of_class(cls) & a.ok])
        if e2e.size == 0:
            continue
        xs, probs = cdf_points(e2e)
        ax.plot(xs, probs, color=CLASS_COLORS[cls], lw=2, label=f"{cls} (n={e2e.size:,})")
        slo = _class_slo_ms(a, cls)
        ax.axvline(slo, color=CLASS_COLORS[cls], ls="--", lw=1.2, label=f"{cls} SLO {slo:g} ms")
        lo, hi = min(lo, max(xs[0], 1e-3), slo), max(hi, xs[-1], slo)
    if hi > 0:
        log_x_if_wide(ax, lo, hi)
        ax.legend(loc="lower right")
    else:
        no_data(ax)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of jobs ≤ latency")
    ax.set_title(f"End-to-end latency CDF — {title}")
    ax.grid(True, which="both", alpha=0.3)
    return save_figure(fig, path)


def plot_slo_violations(a: JobArrays, path: Path, title: str) -> Path:
    """SLO violation rate per class and overall (a shed job counts as a violation)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = [*_classes(a), "overall"]
    masks = [a.of_class(c) for c in groups[:-1]] + [np.ones(len(a), dtype=bool)]
    rates, labels = [], []
    for name, mask in zip(groups, masks, strict=True):
        total = int(mask.sum())
        bad = total - int((mask & a.slo_met).sum())
        rates.append(100.0 * bad / total if total else 0.0)
        slo = f"\nSLO {_class_slo_ms(a, name):g} ms" if name in CLASS_COLORS else ""
        labels.append(f"{name}{slo}")
        ax.bar(
            labels[-1],
            rates[-1],
            color=CLASS_COLORS.get(name, "#7f7f7f"),
            label=f"{name}: {bad:,} of {total:,} jobs",
        )
        ax.annotate(
            f"{rates[-1]:.1f}%\n({bad:,} / {total:,})",
            (len(labels) - 1, rates[-1]),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
        )
    # Headroom above the tallest bar keeps the legend clear of every bar and label.
    ax.set_ylim(0, max(10.0, max(rates) * 1.6))
    ax.set_ylabel("SLO violation rate (% of jobs)")
    ax.set_xlabel("job class")
    ax.set_title(f"SLO violations — {title}")
    ax.legend(loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)


#: A value written beside its dot.
_VALUE_LABEL: dict[str, Any] = {"textcoords": "offset points", "va": "center", "fontsize": 8}


def plot_latency_percentiles(a: JobArrays, path: Path, title: str) -> Path:
    """P50/P95/P99 end-to-end latency per class as dots on a log axis, SLOs dashed.

    Dots, not bars: a bar's length on a log axis measures from an arbitrary floor.
    """
    fig, ax = plt.subplots(figsize=(8, 5))
    classes = _classes(a)
    x = np.arange(len(PERCENTILES))
    lo, hi = np.inf, 0.0
    for i, cls in enumerate(classes):
        e2e = _finite(a.e2e_ms[a.of_class(cls) & a.ok])
        if e2e.size == 0:
            continue
        values = np.percentile(e2e, PERCENTILES)
        xs = x + (i - (len(classes) - 1) / 2) * 0.12
        color = CLASS_COLORS[cls]
        ax.plot(xs, values, color=color, marker="o", ms=9, ls="none", label=cls)
        for xv, v in zip(xs, values, strict=True):
            text = f"{v:.0f} ms" if v >= 100 else f"{v:.3g} ms"
            ax.annotate(text, (xv, v), xytext=(8, 0), **_VALUE_LABEL, color=color)
        slo = _class_slo_ms(a, cls)
        ax.axhline(slo, color=color, ls="--", lw=1.2, label=f"{cls} SLO {slo:g} ms")
        lo, hi = min(lo, float(values.min()), slo), max(hi, float(values.max()), slo)
    if hi > 0:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.6, hi * 1.6)
        label_log_axis(ax.yaxis, lo / 1.6, hi * 1.6)
        ax.legend(loc="upper left")
    else:
        no_data(ax)
    ax.set_xticks(x, [f"P{p}" for p in PERCENTILES])
    ax.set_xlim(-0.5, len(PERCENTILES) - 0.3)
    ax.set_xlabel("percentile of completed jobs")
    ax.set_ylabel("end-to-end latency (ms, log scale)")
    ax.set_title(f"Latency percentiles — {title}")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    return save_figure(fig, path)


def plot_wait_time_dist(a: JobArrays, path: Path, title: str) -> Path:
    """Queue-wait histogram per class (one panel each: their scales differ)."""
    classes = _classes(a) or ["interactive"]
    fig, axes = plt.subplots(1, len(classes), figsize=(6 * len(classes), 4.5), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        wait = _finite(a.wait_ms[a.of_class(cls) & a.ok])
        if wait.size == 0:
            no_data(ax)
        else:
            ax.hist(
                wait, bins=60, color=CLASS_COLORS[cls], alpha=0.8, label=f"{cls} (n={wait.size:,})"
            )
            mean, p99 = float(wait.mean()), float(np.percentile(wait, 99))
            ax.axvline(mean, color="black", ls="-", lw=1, label=f"mean {mean:.1f} ms")
            ax.axvline(p99, color="black", ls=":", lw=1.2, label=f"P99 {p99:.1f} ms")
            ax.legend(loc="upper right")
        ax.set_xlabel("queue wait (ms)")
        ax.set_ylabel("jobs")
        ax.set_title(f"{cls} wait")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Queue wait distribution — {title}")
    return save_figure(fig, path)


def plot_all(jobs: Sequence[Job] | JobArrays, out_dir: str | Path, title: str = "") -> list[Path]:
    """Write the four PNGs (`PLOT_NAMES`) into `out_dir`; returns their paths."""
    a = jobs if isinstance(jobs, JobArrays) else JobArrays.from_jobs(jobs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawers = (plot_latency_cdf, plot_slo_violations, plot_latency_percentiles, plot_wait_time_dist)
    return [draw(a, out / name, title) for draw, name in zip(drawers, PLOT_NAMES, strict=True)]
