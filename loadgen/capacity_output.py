"""What `mlws capacity` writes and prints: probes.csv, capacity.png and the tables.

Everything here reads the JSON-ready report of loadgen.capacity (`build_report`),
so the files and the terminal show the same numbers as capacity.json.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless, like every other plot of the runner

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from scheduling.job import JOB_CLASSES

#: Per-class columns of probes.csv (prefixed with the class, and `twin_<class>` live).
CLASS_FIELDS: tuple[str, ...] = ("jobs", "attainment", "p99_e2e_ms", "rejected", "shed", "errors")
CLASS_COLORS: dict[str, str] = {"interactive": "#1f77b4", "batch": "#d62728"}


def write_outputs(report: dict[str, Any], out: Path) -> Path:
    """capacity.json, probes.csv and capacity.png under the existing directory `out`."""
    (out / "capacity.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    write_probes_csv(report, out / "probes.csv")
    plot_capacity(report, out / "capacity.png")
    return out


def write_probes_csv(report: dict[str, Any], path: Path) -> Path:
    """probes.csv: one row per probe in the order run; empty cell = undefined."""
    sides = ["", "twin_"] if report["url"] else [""]
    head = ["index", "rate", "rate_samples_per_s", "load", "duration_s", "jobs"]
    cols = [f"{side}{c}_{f}" for side in sides for c in JOB_CLASSES for f in CLASS_FIELDS]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*head, *cols, "wall_s"])
        for p in report["probes"]:
            row = [p[h] for h in head]
            for side in sides:
                stats = p["twin" if side else "classes"]
                row += [stats[c][f] for c in JOB_CLASSES for f in CLASS_FIELDS]
            row.append(p["wall_s"])
            writer.writerow(_cell(v) for v in row)
    return path


def _cell(value: Any) -> Any:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else value


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def _rate(answer: dict[str, Any]) -> str:
    """A capacity for the table: '>= x' at the upper bound, '< x' below the lower one."""
    lo, hi = answer["capacity_jobs_per_s"], answer["first_fail_jobs_per_s"]
    if lo is None:
        return "n/a" if hi is None else f"< {hi:.3g}"
    return (">= " if answer["bound"] == "upper" else "") + f"{lo:.3g}"


def format_probe(p: dict[str, Any]) -> str:
    """A progress line per probe record: rate, load, per-class attainment (twin's beside)."""
    parts = []
    for cls in JOB_CLASSES:
        twin = "" if p["twin"] is None else f" (twin {_pct(p['twin'][cls]['attainment'])})"
        parts.append(f"{cls} {_pct(p['classes'][cls]['attainment'])}{twin}")
    return (
        f"probe {p['index'] + 1:>2}: {p['rate']:8.3f} jobs/s (load {p['load']:5.2f}) "
        f"{p['jobs']:>6} jobs in {p['duration_s']:.0f} s  "
        + "  ".join(parts)
        + f"  [{p['wall_s']:.1f}s]"
    )


def format_table(report: dict[str, Any]) -> str:
    """The answer per class as a Markdown table, under a one-line header."""
    live = report["url"] is not None
    cols = ["class", "capacity (jobs/s)", "samples/s", "load", "attainment", "p99 e2e (ms)"]
    cols += ["first fail (jobs/s)", "stopped", *(["twin capacity (jobs/s)"] if live else [])]
    lines = [
        f"{report['name']}: {'live ' + str(report['url']) if live else 'simulator'}, target "
        f"{_pct(report['search']['target'])} of each class's jobs within SLO, "
        f"{len(report['seeds'])} seed(s), {len(report['probes'])} probes "
        f"in {report['elapsed_s']:.1f} s",
        "| " + " | ".join(cols) + " |",
        "|---|" + "---:|" * (len(cols) - 1),
    ]
    for cls, a in report["classes"].items():
        cells = [cls, _rate(a), _num(a["capacity_samples_per_s"]), _num(a["load"], ".2f")]
        cells += [_pct(a["attainment"]), _num(a["p99_e2e_ms"], ".0f")]
        cells += [_num(a["first_fail_jobs_per_s"]), a["stopped"]]
        lines.append("| " + " | ".join([*cells, *([_rate(a["twin"])] if live else [])]) + " |")
    return "\n".join(lines)


def last_line(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """The machine-readable answer printed last: capacities per class (None: none found)."""
    classes = report["classes"]
    line: dict[str, Any] = {
        "capacity_jobs_per_s": {c: a["capacity_jobs_per_s"] for c, a in classes.items()},
        "bound": {c: a["bound"] for c, a in classes.items()},
    }
    if report["url"]:
        line["twin_capacity_jobs_per_s"] = {
            c: a["twin"]["capacity_jobs_per_s"] for c, a in classes.items()
        }
    return {**line, "out": str(out)}


# ----------------------------------------------------------------------------- plot
def _nines(attainment: float, top: float) -> float:
    """-log10(1 - a), capped at `top`: 90 % → 1, 99 % → 2; spreads out the region near 100 %."""
    return min(-math.log10(max(1.0 - attainment, 10.0**-top)), top)


def plot_capacity(report: dict[str, Any], path: Path) -> Path:
    """Attainment vs arrival rate, one panel per class: target line, capacity markers."""
    target, capacity = report["search"]["target"], report["unbatched_capacity_jobs_per_s"]
    # Room for one more nine above the target, then a band at the top for "no miss".
    top = _nines(target, 9) + 1.5
    fig, axes = plt.subplots(1, len(JOB_CLASSES), figsize=(13, 5), sharey=True)
    for ax, cls in zip(axes, JOB_CLASSES, strict=True):
        _plot_class(ax, report, cls, top)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        if hi <= lo * 1.01:  # one probed rate (a short live search): give the axis room
            ax.set_xlim(lo / 2, hi * 2)
        ax.set_xlabel("arrival rate of the whole mix (jobs/s)")
        load = ax.secondary_xaxis("top", functions=(lambda r: r / capacity, lambda x: x * capacity))
        load.set_xlabel("load (fraction of unbatched capacity)")
        for axis in (ax.xaxis, load.xaxis):  # 0.1, 0.2, 0.5, 1 rather than 10^-1, 2x10^-1…
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.axhline(_nines(target, top), color="0.3", ls="--", lw=1, label=f"target {_pct(target)}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    ticks = [t for t in (0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999) if _nines(t, top) < top - 0.4]
    axes[0].set_yticks([_nines(t, top) for t in ticks] + [top])
    axes[0].set_yticklabels([f"{100 * t:g}%" for t in ticks] + ["100%"])
    axes[0].set_ylim(-0.05, top + 0.15)
    axes[0].set_ylabel("jobs of the class within SLO (log scale of misses)")
    where = f"live {report['url']}" if report["url"] else "simulator"
    fig.suptitle(f"Capacity per class: {report['name']} ({where}, target {_pct(target)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _minor_label(value: float, _: int) -> str:
    """Label only the 2s and 5s between decades: readable over one decade or five."""
    return f"{value:g}" if f"{value:.0e}"[0] in "25" else ""


def _plot_class(ax: Axes, report: dict[str, Any], cls: str, top: float) -> None:
    """One class's probes (and the twin's, hollow and dashed) and its capacity line(s)."""
    color = CLASS_COLORS.get(cls, "0.2")
    probes = sorted(report["probes"], key=lambda p: p["rate"])
    live = report["url"] is not None
    sides = [("classes", "live" if live else "simulated", "o-", color, ":")]
    sides += [("twin", "simulated twin", "s--", "none", "-.")] if live else []
    for key, label, style, face, line in sides:
        pts = [(p["rate"], p[key][cls]["attainment"]) for p in probes]
        pts = [(r, _nines(a, top)) for r, a in pts if a is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, style, color=color, mfc=face, ms=7, lw=1.5, label=label)
        answer = report["classes"][cls]
        answer = answer["twin"] if key == "twin" else answer
        if answer["capacity_jobs_per_s"] is not None:
            ax.axvline(
                answer["capacity_jobs_per_s"],
                color=color,
                ls=line,
                lw=2,
                label=f"{label} capacity {_rate(answer)} jobs/s",
            )
    ax.set_title(cls)
