"""Per-job trace and aggregate summary of an experiment.

Both take a list of finished `Job`s and nothing else about where they came
from, so the simulator and the live gateway share them. Million-job runs are
the normal case: everything is computed on numpy columns extracted once
(`JobArrays`), never on per-row dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduling.job import JOB_CLASSES, Job

TRACE_COLUMNS: tuple[str, ...] = (
    "job_id",
    "class",
    "workload",
    "backend",
    "precision",
    "batch_size",
    "arrival_s",
    "start_s",
    "end_s",
    "wait_ms",
    "service_ms",
    "e2e_ms",
    "deadline_s",
    "slo_ms",
    "slo_met",
    "outcome",
    "lane",
    "microbatch_id",
)
PERCENTILES: tuple[int, ...] = (50, 95, 99)


def _floats(values: Iterable[float | None]) -> np.ndarray:
    """A float column with NaN where a timestamp is missing (shed, rejected)."""
    return np.array([math.nan if v is None else v for v in values], dtype=float)


@dataclass(frozen=True)
class JobArrays:
    """Columns of a job list: times in seconds (NaN when missing)."""

    job_class: np.ndarray  # str
    samples: np.ndarray  # int
    arrival: np.ndarray
    start: np.ndarray
    end: np.ndarray
    deadline: np.ndarray
    outcome: np.ndarray  # str; "unfinished" for a job without an outcome

    @classmethod
    def from_jobs(cls, jobs: Sequence[Job]) -> JobArrays:
        """Extract the columns once; every metric and plot reads them."""
        return cls(
            job_class=np.array([j.job_class for j in jobs], dtype=object),
            samples=np.fromiter((j.samples for j in jobs), dtype=np.int64, count=len(jobs)),
            arrival=np.fromiter((j.arrival for j in jobs), dtype=float, count=len(jobs)),
            start=_floats(j.start for j in jobs),
            end=_floats(j.end for j in jobs),
            deadline=np.fromiter((j.deadline for j in jobs), dtype=float, count=len(jobs)),
            outcome=np.array([j.outcome or "unfinished" for j in jobs], dtype=object),
        )

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def wait_ms(self) -> np.ndarray:
        """Queue wait: arrival until the job's first sample starts on a lane."""
        return (self.start - self.arrival) * 1000.0

    @property
    def service_ms(self) -> np.ndarray:
        """First start until last end (includes gaps between a split job's parts)."""
        return (self.end - self.start) * 1000.0

    @property
    def e2e_ms(self) -> np.ndarray:
        """End-to-end latency: arrival until the last sample finishes."""
        return (self.end - self.arrival) * 1000.0

    @property
    def slo_ms(self) -> np.ndarray:
        return (self.deadline - self.arrival) * 1000.0

    @property
    def ok(self) -> np.ndarray:
        return self.outcome == "ok"

    @property
    def slo_met(self) -> np.ndarray:
        """Same rule as `Job.slo_met`: finished ok, by the deadline."""
        with np.errstate(invalid="ignore"):
            return self.ok & (self.end <= self.deadline)

    def of_class(self, job_class: str) -> np.ndarray:
        """Boolean mask of one class."""
        return self.job_class == job_class


# --------------------------------------------------------------------------- trace
#: printf spec of each trace column: seconds at µs resolution, milliseconds at 1 µs.
_TRACE_SPECS: tuple[str, ...] = (
    *("%d", "%s", "%s", "%s", "%s", "%d"),
    *("%.6f", "%.6f", "%.6f", "%.3f", "%.3f", "%.3f", "%.6f", "%.3f"),
    *("%s", "%s", "%s", "%s"),
)
_TRACE_FORMAT = ",".join(_TRACE_SPECS) + "\n"


def _cell(spec: str, value: object) -> str:
    """One field of a row with missing values: empty for None or NaN."""
    if value is None or (isinstance(value, float) and value != value):  # v != v: NaN
        return ""
    return spec % value


def _opt_ints(values: Iterable[int | None]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def write_trace(jobs: Sequence[Job], path: str | Path, *, arrays: JobArrays | None = None) -> Path:
    """Write trace.csv: one row per job, columns `TRACE_COLUMNS`.

    Times are seconds with µs resolution; durations are milliseconds; a
    timestamp a job never reached (a shed job's start) is an empty field.
    `arrays` (the same jobs' columns) saves re-extracting them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = arrays if arrays is not None else JobArrays.from_jobs(jobs)
    columns: list[list[Any]] = [
        [j.id for j in jobs],
        a.job_class.tolist(),
        [j.workload for j in jobs],
        [j.backend for j in jobs],
        [j.precision for j in jobs],
        a.samples.tolist(),
        a.arrival.tolist(),
        a.start.tolist(),
        a.end.tolist(),
        a.wait_ms.tolist(),
        a.service_ms.tolist(),
        a.e2e_ms.tolist(),
        a.deadline.tolist(),
        a.slo_ms.tolist(),
        ["true" if m else "false" for m in a.slo_met.tolist()],
        a.outcome.tolist(),
        _opt_ints(j.lane for j in jobs),
        _opt_ints(j.microbatch_id for j in jobs),
    ]
    # One C-level printf per row is ~3x faster than formatting field by field;
    # only the rare rows with a missing timestamp take the slow path.
    complete = np.isfinite(a.start) & np.isfinite(a.end)
    with path.open("w", newline="") as fh:
        fh.write(",".join(TRACE_COLUMNS) + "\n")
        # Names and outcomes never contain commas, so no quoting is needed.
        fh.writelines(
            _TRACE_FORMAT % row
            if full
            else ",".join(_cell(s, v) for s, v in zip(_TRACE_SPECS, row, strict=True)) + "\n"
            for row, full in zip(zip(*columns, strict=True), complete.tolist(), strict=True)
        )
    return path


# --------------------------------------------------------------------------- summary
def _num(value: float) -> float | None:
    """A JSON-safe float: NaN and infinities become null."""
    return float(value) if math.isfinite(value) else None


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    """P50/P95/P99, mean and max of the finite values (numpy's linear interpolation)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {**{f"p{p}": None for p in PERCENTILES}, "mean": None, "max": None}
    qs = np.percentile(finite, PERCENTILES)
    out: dict[str, float | None] = {f"p{p}": _num(q) for p, q in zip(PERCENTILES, qs, strict=True)}
    out["mean"] = _num(float(finite.mean()))
    out["max"] = _num(float(finite.max()))
    return out


def class_slos_ms(a: JobArrays, config_dict: Mapping[str, Any]) -> dict[str, float | None]:
    """Each class's SLO in ms: as configured (`slo_ms.<class>`), so it prints as given.

    Without a configured value (a job list from elsewhere) it is the median of the
    class's deadline − arrival, rounded to the µs, since the subtraction blurs it
    ((1.7 + 0.1) − 1.7 s is 100.00000000000009 ms); None for a class without jobs.
    """
    configured = config_dict.get("slo_ms")
    out: dict[str, float | None] = {}
    for cls in JOB_CLASSES:
        value = configured.get(cls) if isinstance(configured, Mapping) else None
        if value is None:
            slo = a.slo_ms[a.of_class(cls)]
            value = round(float(np.median(slo)), 3) if slo.size else None
        out[cls] = value
    return out


def _group(a: JobArrays, mask: np.ndarray, window_s: float) -> dict[str, Any]:
    """Counts, latency percentiles, SLO attainment and throughput of one subset."""
    total = int(mask.sum())
    ok = mask & a.ok
    completed = int(ok.sum())
    met = int((mask & a.slo_met).sum())
    done_samples = int(a.samples[ok].sum())
    return {
        "jobs": total,
        "completed": completed,
        "samples": int(a.samples[mask].sum()),
        "latency_ms": {
            "e2e": percentiles(a.e2e_ms[ok]),
            "wait": percentiles(a.wait_ms[ok]),
            "service": percentiles(a.service_ms[ok]),
        },
        "slo": {
            "met": met,
            "violations": total - met,
            "attainment": met / total if total else None,
            "violation_rate": (total - met) / total if total else None,
        },
        "throughput": {
            "jobs_per_s": completed / window_s if window_s > 0 else None,
            "samples_per_s": done_samples / window_s if window_s > 0 else None,
        },
    }


def batch_to_interactive_wait_ratio(a: JobArrays) -> float | None:
    """Mean batch queue wait ÷ mean interactive queue wait over completed jobs; None if
    undefined.

    1: both classes wait alike; above 1: batch jobs wait longer (priority policies push
    it far above 1, which is their point, not unfairness to interactive work).
    """
    wait = a.wait_ms
    means = []
    for cls in ("batch", "interactive"):
        w = wait[a.of_class(cls) & a.ok]
        w = w[np.isfinite(w)]
        if w.size == 0:
            return None
        means.append(float(w.mean()))
    batch_wait, interactive_wait = means
    return batch_wait / interactive_wait if interactive_wait > 0 else None


def summarize(
    jobs: Sequence[Job] | JobArrays,
    config_dict: Mapping[str, Any],
    duration_s: float,
    *,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate metrics of a run, JSON-ready.

    `duration_s` is the throughput window (the runner passes the time the last
    job finished, so an overloaded run is not credited with work done after
    the window). Latency percentiles cover jobs that finished `ok`; SLO
    attainment counts every job, so a shed job is a violation.
    """
    a = jobs if isinstance(jobs, JobArrays) else JobArrays.from_jobs(jobs)
    everything = np.ones(len(a), dtype=bool)
    slos = class_slos_ms(a, config_dict)
    outcomes, counts = np.unique(a.outcome, return_counts=True) if len(a) else ([], [])
    summary: dict[str, Any] = {
        "window_s": duration_s,
        "slo_ms": slos,
        **_group(a, everything, duration_s),
        "outcomes": {str(o): int(c) for o, c in zip(outcomes, counts, strict=True)},
        "batch_to_interactive_wait_ratio": batch_to_interactive_wait_ratio(a),
        "classes": {
            cls: {"slo_ms": slos[cls], **_group(a, a.of_class(cls), duration_s)}
            for cls in JOB_CLASSES
        },
    }
    if extra:
        summary["run"] = dict(extra)
    summary["config"] = dict(config_dict)
    return summary


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Write summary.json (strict JSON: no NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines: per-class P50/P99, SLO attainment, throughput."""
    lines = []
    for cls, group in summary["classes"].items():
        if not group["jobs"]:
            continue
        e2e = group["latency_ms"]["e2e"]
        lines.append(
            f"  {cls:<11} jobs={group['jobs']:<7} p50={_ms(e2e['p50'])} p99={_ms(e2e['p99'])} "
            f"slo({_slo(group['slo_ms'])})={_pct(group['slo']['attainment'])} met"
        )
    tp = summary["throughput"]
    lines.append(
        f"  throughput  {tp['jobs_per_s'] or 0:.2f} jobs/s, {tp['samples_per_s'] or 0:.1f} "
        f"samples/s; mean batch wait ÷ mean interactive wait = "
        f"{_ratio(summary['batch_to_interactive_wait_ratio'])}"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}ms"


def _slo(value: float | None) -> str:
    """An SLO as configured: 100 prints as 100ms, 62.5 as 62.5ms."""
    return "n/a" if value is None else f"{value:g}ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
