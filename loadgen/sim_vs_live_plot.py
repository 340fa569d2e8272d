"""`sim_vs_live.png`: a live run beside its simulated twin, class by class.

The twin replays the live run's exact arrivals in the simulator, so where the
two curves part is where the simulator's model of the gateway (service times,
lanes, CPU sharing, overheads) differs from what the gateway did.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from loadgen.plots import CLASS_COLORS, cdf_points, log_x_if_wide, no_data, save_figure
from loadgen.report import JobArrays
from scheduling.job import JOB_CLASSES

PLOT_NAME = "sim_vs_live.png"


def _attainment(a: JobArrays, cls: str) -> str:
    mask = a.of_class(cls)
    total = int(mask.sum())
    return f"{100 * int((mask & a.slo_met).sum()) / total:.1f} %" if total else "n/a"


def _draw_class(ax: plt.Axes, live: JobArrays, twin: JobArrays, cls: str, slo_ms: float) -> None:
    """One panel: the e2e CDF of the class's completed jobs, live solid, twin dashed."""
    color = CLASS_COLORS[cls]
    lo, hi = slo_ms, slo_ms
    for arrays, name, style in ((live, "live", "-"), (twin, "simulated twin", "--")):
        e2e = arrays.e2e_ms[arrays.of_class(cls) & arrays.ok]
        e2e = e2e[np.isfinite(e2e)]
        if e2e.size == 0:
            continue
        xs, probs = cdf_points(e2e)
        label = f"{name}: {_attainment(arrays, cls)} of jobs within SLO (n={e2e.size:,} ok)"
        ax.plot(xs, probs, color=color, ls=style, lw=2, label=label)
        lo, hi = min(lo, max(float(xs[0]), 1e-3)), max(hi, float(xs[-1]))
    ax.axvline(slo_ms, color="black", ls=":", lw=1.2, label=f"SLO {slo_ms:g} ms")
    if lo < hi:
        log_x_if_wide(ax, lo, hi)
        ax.legend(loc="lower right", fontsize="small")
    else:
        no_data(ax)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of completed jobs ≤ latency")
    ax.set_title(f"{cls} (SLO {slo_ms:g} ms)")
    ax.grid(True, which="both", alpha=0.3)


def plot_sim_vs_live(
    live: JobArrays, twin: JobArrays, path: Path, slo_ms: dict[str, float | None], title: str
) -> Path:
    """One panel per class with jobs; `slo_ms` per class as configured."""
    classes = [c for c in JOB_CLASSES if live.of_class(c).any() and slo_ms.get(c)]
    fig, axes = plt.subplots(
        1, max(len(classes), 1), figsize=(6.5 * max(len(classes), 1), 4.8), squeeze=False
    )
    for ax, cls in zip(axes[0], classes, strict=False):
        _draw_class(ax, live, twin, cls, float(slo_ms[cls] or 0))
    if not classes:
        no_data(axes[0][0])
    fig.suptitle(f"Live run vs its simulated twin (same arrivals) — {title}")
    return save_figure(fig, path)
