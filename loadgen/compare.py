"""Policy comparison: every scheduler on the same traffic, at several loads.

For each load one arrival trace is drawn (rate = load × capacity, the config's
seed) and every policy runs on exactly that trace, so the differences between
rows of one load are the policies' alone, not sampling noise.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.arrivals import capacity_jobs_per_s, poisson_arrivals
from loadgen.compare_plot import plot_compare
from loadgen.config import ExperimentConfig
from loadgen.experiment import build_service_model, check_runnable, simulate_run
from predictor.progress import Progress
from scheduling.config import SchedulerConfig
from scheduling.config_errors import ConfigError, format_errors
from scheduling.policies import POLICIES

COMPARE_COLUMNS: tuple[str, ...] = (
    "scheduler",
    "load",
    "arrival_rate_jobs_per_s",
    "jobs",
    "interactive_slo_attainment",
    "batch_slo_attainment",
    "interactive_p99_ms",
    "batch_p99_ms",
    "throughput_samples_per_s",
    "batch_throughput_samples_per_s",
    "batch_to_interactive_wait_ratio",
)
#: Markdown headers, one per column (same order).
_MD_HEADERS: tuple[str, ...] = (
    "scheduler",
    "load",
    "rate (jobs/s)",
    "jobs",
    "interactive SLO met",
    "batch SLO met",
    "interactive P99 (ms)",
    "batch P99 (ms)",
    "throughput (samples/s)",
    "batch throughput (samples/s)",
    "mean batch wait ÷ mean interactive wait",
)


def parse_policies(text: str) -> list[str]:
    """`fifo,dynamic` → ['fifo', 'dynamic']; an unknown name is a ConfigError."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise ConfigError(
            f"--schedulers: unknown policy {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(POLICIES)}"
        )
    return names


def parse_loads(text: str) -> list[float]:
    """`0.3,0.5` → [0.3, 0.5]; each load must be a number in (0, 10]."""
    loads = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"--loads: {part!r} is not a number") from None
        if not 0 < value <= 10:
            raise ConfigError(f"--loads: {value} is outside (0, 10]")
        loads.append(value)
    if not loads:
        raise ConfigError("--loads: give at least one load, e.g. 0.3,0.5,0.7,0.9")
    return loads


def with_policy(config: ExperimentConfig, policy: str) -> ExperimentConfig:
    """The same experiment under another policy (validated: weights etc. still apply)."""
    try:
        scheduler = SchedulerConfig.model_validate(
            {**config.scheduler.model_dump(), "policy": policy}
        )
    except ValidationError as exc:
        lines = format_errors(exc, SchedulerConfig)
        raise ConfigError("\n".join(f"{config.source}: scheduler.{x}" for x in lines)) from None
    return config.model_copy(update={"scheduler": scheduler})


def _row(policy: str, load: float, rate: float, summary: dict[str, Any]) -> dict[str, Any]:
    classes = summary["classes"]
    inter, batch = classes["interactive"], classes["batch"]
    return {
        "scheduler": policy,
        "load": load,
        "arrival_rate_jobs_per_s": rate,
        "jobs": summary["jobs"],
        "interactive_slo_attainment": inter["slo"]["attainment"],
        "batch_slo_attainment": batch["slo"]["attainment"],
        "interactive_p99_ms": inter["latency_ms"]["e2e"]["p99"],
        "batch_p99_ms": batch["latency_ms"]["e2e"]["p99"],
        "throughput_samples_per_s": summary["throughput"]["samples_per_s"],
        "batch_throughput_samples_per_s": batch["throughput"]["samples_per_s"],
        "batch_to_interactive_wait_ratio": summary["batch_to_interactive_wait_ratio"],
    }


def run_compare(
    config: ExperimentConfig,
    policies: Sequence[str],
    loads: Sequence[float],
    out_dir: str | Path,
    *,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run policies × loads; write compare.csv, compare.md, compare.png and summaries/.

    Returns the table rows (load-major, policies in the order given).
    """
    check_runnable(config)
    variants = {p: with_policy(config, p) for p in policies}
    model = build_service_model(config)
    # Capacity depends on lanes and job splitting, not on the policy: one per run.
    capacity = capacity_jobs_per_s(config, model)
    out = Path(out_dir)
    (out / "summaries").mkdir(parents=True, exist_ok=True)
    rows = []
    progress = None if quiet else Progress(len(loads) * len(variants), "compare", unit="run")
    for load in loads:
        rate = load * capacity
        arrivals = poisson_arrivals(config, rate, config.duration_s, config.seed)
        for policy, variant in variants.items():
            info = {"source": config.source, "load": load, "arrival_rate_jobs_per_s": rate}
            run = simulate_run(variant, arrivals, model, info=info)
            rows.append(_row(policy, load, rate, run.summary))
            summary_path = out / "summaries" / f"{policy}-load{load:g}.json"
            summary_path.write_text(json.dumps(run.summary, indent=2, allow_nan=False) + "\n")
            if progress:
                progress.update(detail=f"{policy} at load {load:g}: {_brief(rows[-1])}")
    if progress:
        progress.close()
    write_compare_csv(rows, out / "compare.csv")
    markdown = compare_markdown(rows)
    (out / "compare.md").write_text(markdown + "\n")
    plot_compare(rows, out / "compare.png", title=config.name, slo_ms=config.slo_ms.model_dump())
    if not quiet:
        print(
            f"{config.name}: capacity {capacity:.2f} jobs/s; {len(loads)} loads x "
            f"{len(variants)} policies on {config.duration_s:g} s of traffic each\n"
        )
        print(markdown)
        print(f"\nresults: {out}")
    return rows


def _brief(row: dict[str, Any]) -> str:
    """Per class: attainment and P99 of one compare row, for its progress line."""
    parts = []
    for cls in ("interactive", "batch"):
        attained, p99 = row[f"{cls}_slo_attainment"], row[f"{cls}_p99_ms"]
        if attained is not None:
            p99_text = _md_cell("p99", p99)
            parts.append(f"{cls} {_md_cell('attainment', attained)} met, P99 {p99_text} ms")
    return "; ".join(parts) or "no jobs"


def default_out_dir(config: ExperimentConfig, root: str | Path = "results") -> Path:
    """results/compare-<name>-<YYYYmmdd-HHMMSS>."""
    return Path(root) / f"compare-{config.name}-{datetime.now():%Y%m%d-%H%M%S}"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_compare_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """compare.csv: `COMPARE_COLUMNS`, one row per (scheduler, load); empty = undefined."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COMPARE_COLUMNS)
        writer.writerows([_csv_value(r[c]) for c in COMPARE_COLUMNS] for r in rows)
    return path


def _md_cell(column: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if column.endswith("attainment"):
        return f"{100 * value:.1f}%"
    if column == "load":
        return f"{value:g}"
    if column in ("batch_to_interactive_wait_ratio", "arrival_rate_jobs_per_s"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def compare_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The compare table as GitHub Markdown (attainment in %, times in ms)."""
    lines = [
        "| " + " | ".join(_MD_HEADERS) + " |",
        "|" + "|".join("---" if c == "scheduler" else "---:" for c in COMPARE_COLUMNS) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c, r[c]) for c in COMPARE_COLUMNS) + " |")
    return "\n".join(lines)
