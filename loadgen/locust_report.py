"""Locust's CSVs (and its --json-file) → the project's SLO report, summary.json.

    python -m loadgen.locust_report --csv-prefix results/locust/run --out results/locust
    mlws locust-report --csv-prefix results/locust/run [--json results/locust/run.json] --out DIR

Reads what ``locust --csv PREFIX --json-file PREFIX`` writes (Locust appends
``.json`` to the --json-file name, so ``--json-file results/locust/run`` gives
``run.json``, which is found without --json):

- ``PREFIX_stats.csv``: one row per request name. The class is the name's
  ``[tag]`` (``/infer [interactive]``, as loadgen/locustfile.py names them);
  P50/P95/P99 come from the row's percentile columns, mean and max from its
  average and max. Several rows of one class keep the largest percentile of
  each (an upper bound: percentiles of rows cannot be merged exactly).
- ``PREFIX_failures.csv``: failures by message. "SLO missed: ..." rows are SLO
  misses; "HTTP 429 queue_full: ..." rows are errors keyed by their code.
- ``PREFIX_stats_history.csv``: the window and the peak user count.
- the JSON: final request and failure counts and the exact window. Locust
  rewrites the CSVs once a second, so their counts can miss the last second;
  when the JSON is there its counts win, and failures the CSV did not see yet
  are reported as ``unattributed`` (and counted as errors, not completions).

SLO attainment = 1 − (SLO misses + other failures) / requests, per class and
overall. Latencies are Locust's client-side response times (HTTP included;
failed requests too, so fast 429s pull percentiles down), at Locust's
resolution (rounded to 10 ms above 100 ms, 100 ms above 1 s). The summary has
`loadgen/report.py`'s shape where the data allows — classes →
latency_ms.e2e.p50/p95/p99, slo.attainment, throughput.jobs_per_s — with None
for what Locust does not know (wait and service time, samples), plus
``"source": "locust"``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.report import PERCENTILES, write_summary
from scheduling.job import JOB_CLASSES

_TAG = re.compile(r"\[([\w-]+)\]\s*$")
_HTTP = re.compile(r"HTTP (\d+) (\w+)")
_SLO = re.compile(r"SLO missed: e2e (\d+) ms > (\d+) ms")
_NO_LATENCY = {**{f"p{p}": None for p in PERCENTILES}, "mean": None, "max": None}


@dataclass(frozen=True)
class NameStats:
    """One request name: its row of *_stats.csv, counts final when the JSON has them."""

    name: str
    requests: int
    failures: int
    #: p50/p95/p99/mean/max in ms (None where Locust wrote N/A).
    latency: dict[str, float | None]


@dataclass(frozen=True)
class LocustRun:
    """Everything read from one Locust run's files."""

    names: list[NameStats]
    aggregated: NameStats | None
    #: (request name, error message, occurrences) from *_failures.csv.
    failures: list[tuple[str, str, int]]
    window_s: float | None
    users: int | None
    files: dict[str, str]


def _number(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    return float(text)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def read_locust(csv_prefix: str | Path, json_path: str | Path | None = None) -> LocustRun:
    """Read PREFIX_stats.csv (required), the failures and history CSVs and the JSON if present."""
    prefix = str(csv_prefix)
    stats_path = Path(f"{prefix}_stats.csv")
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path} not found (is --csv-prefix what locust --csv got?)")
    files = {"stats": str(stats_path)}
    final = _read_json(_json_path(prefix, json_path), files)
    try:
        names, aggregated = [], None
        for row in _rows(stats_path):
            entry = _name_stats(row, final)
            if _is_aggregated(row):
                aggregated = entry
            else:
                names.append(entry)
        failures: list[tuple[str, str, int]] = []
        failures_path = Path(f"{prefix}_failures.csv")
        if failures_path.is_file():
            files["failures"] = str(failures_path)
            rows = _rows(failures_path)
            failures = [(r["Name"], r["Error"], int(r["Occurrences"])) for r in rows]
        window_s, users = _history(Path(f"{prefix}_stats_history.csv"), files)
    except KeyError as exc:
        raise ValueError(f"a Locust CSV of {prefix!r} lacks the column {exc}") from None
    if final is not None and final.window_s is not None:
        window_s = final.window_s  # exact, where the history has whole seconds
    return LocustRun(names, aggregated, failures, window_s, users, files)


def _is_aggregated(row: dict[str, str]) -> bool:
    return row["Name"] == "Aggregated" and not row["Type"]


def _json_path(prefix: str, json_path: str | Path | None) -> Path | None:
    if json_path is None:
        guess = Path(f"{prefix}.json")
        return guess if guess.is_file() else None
    path = Path(json_path)
    if not path.is_file() and Path(f"{path}.json").is_file():
        return Path(f"{path}.json")  # the name given to --json-file, before Locust's ".json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return path


@dataclass(frozen=True)
class FinalCounts:
    """What Locust's --json-file adds to the CSVs: counts at the very end, exact window."""

    #: request name → (requests, failures).
    counts: dict[str, tuple[int, int]]
    #: First request start to last request, in seconds.
    window_s: float | None


def _read_json(path: Path | None, files: dict[str, str]) -> FinalCounts | None:
    if path is None:
        return None
    files["json"] = str(path)
    try:
        entries = json.loads(path.read_text())
        counts = {e["name"]: (int(e["num_requests"]), int(e["num_failures"])) for e in entries}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not Locust's --json-file output ({exc})") from None
    starts = [e["start_time"] for e in entries if e.get("start_time")]
    ends = [e["last_request_timestamp"] for e in entries if e.get("last_request_timestamp")]
    window_s = max(ends) - min(starts) if starts and ends else None
    return FinalCounts(counts, window_s)


def _name_stats(row: dict[str, str], final: FinalCounts | None) -> NameStats:
    latency = {f"p{p}": _number(row.get(f"{p}%")) for p in PERCENTILES}
    latency["mean"] = _number(row.get("Average Response Time"))
    latency["max"] = _number(row.get("Max Response Time"))
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    if final is not None:
        if _is_aggregated(row):
            requests = sum(r for r, _ in final.counts.values())
            failures = sum(f for _, f in final.counts.values())
        elif row["Name"] in final.counts:
            requests, failures = final.counts[row["Name"]]
    return NameStats(row["Name"], requests, failures, latency)


def _history(path: Path, files: dict[str, str]) -> tuple[float | None, int | None]:
    """(seconds from the first to the last history row, peak users), or Nones."""
    if not path.is_file():
        return None, None
    files["history"] = str(path)
    rows = _rows(path)
    if len(rows) < 2:
        return None, None
    stamps = [float(r["Timestamp"]) for r in rows]
    users = max(int(r["User Count"]) for r in rows)
    return stamps[-1] - stamps[0], users


def class_of(name: str) -> str | None:
    """The `[tag]` at the end of a request name, e.g. "/infer [batch]" → "batch"."""
    match = _TAG.search(name)
    return match.group(1) if match else None


# --------------------------------------------------------------------------- summary
def _group(
    names: list[NameStats],
    failures: list[tuple[str, str, int]],
    window_s: float | None,
    latency: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """report.py's per-group block from the rows (and failure rows) of one group."""
    requests = sum(n.requests for n in names)
    failed = sum(n.failures for n in names)
    missed = sum(count for _, error, count in failures if "SLO missed" in error)
    errors: Counter[str] = Counter()
    for _, error, count in failures:
        if "SLO missed" not in error:
            match = _HTTP.search(error)
            errors[match.group(2) if match else "error"] += count
    unattributed = max(0, failed - missed - sum(errors.values()))
    completed = requests - sum(errors.values()) - unattributed
    slo_values = Counter(int(m.group(2)) for _, e, _c in failures if (m := _SLO.search(e)))
    return {
        "jobs": requests,
        "completed": completed,
        "samples": None,
        "slo_ms": float(slo_values.most_common(1)[0][0]) if slo_values else None,
        "latency_ms": {
            "e2e": latency if latency is not None else _merge_latency(names),
            "wait": dict(_NO_LATENCY),
            "service": dict(_NO_LATENCY),
        },
        "slo": {
            "met": requests - failed,
            "violations": failed,
            "slo_missed": missed,
            "errors": dict(errors),
            "unattributed": unattributed,
            "attainment": (requests - failed) / requests if requests else None,
            "violation_rate": failed / requests if requests else None,
        },
        "throughput": {
            "jobs_per_s": completed / window_s if window_s else None,
            "samples_per_s": None,
        },
    }


def _merge_latency(names: list[NameStats]) -> dict[str, float | None]:
    """One row's latency, or several rows' upper bound (max of each percentile)."""
    live = [n for n in names if n.requests]
    if not live:
        return dict(_NO_LATENCY)
    merged: dict[str, float | None] = {}
    for key in _NO_LATENCY:
        values = [n.latency[key] for n in live if n.latency[key] is not None]
        merged[key] = max(values) if values else None
    means = [(n.latency["mean"], n.requests) for n in live if n.latency["mean"] is not None]
    if means:
        merged["mean"] = sum(m * r for m, r in means) / sum(r for _, r in means)
    return merged


def summarize_locust(run: LocustRun) -> dict[str, Any]:
    """The summary.json of a Locust run (see the module docstring)."""
    overall_latency = run.aggregated.latency if run.aggregated else None
    overall = _group(run.names, run.failures, run.window_s, overall_latency)
    outcomes = {"ok": overall["completed"], **overall["slo"]["errors"]}
    if overall["slo"]["unattributed"]:
        outcomes["unattributed"] = overall["slo"]["unattributed"]
    classes = {}
    for cls in JOB_CLASSES:
        names = [n for n in run.names if class_of(n.name) == cls]
        wanted = {n.name for n in names}
        failures = [f for f in run.failures if f[0] in wanted]
        classes[cls] = _group(names, failures, run.window_s)
    return {
        "source": "locust",
        "window_s": run.window_s,
        **overall,
        # Per class, as report.py writes it: one figure would mix 100 ms and 1000 ms.
        "slo_ms": {cls: group["slo_ms"] for cls, group in classes.items()},
        "outcomes": outcomes,
        "batch_to_interactive_wait_ratio": None,  # Locust reports no queue waits
        "classes": classes,
        "run": {"users": run.users, "files": run.files},
        "config": {},
    }


def format_locust_summary(summary: dict[str, Any]) -> str:
    """A few human lines: per class P50/P95/P99, attainment and its failures; throughput."""
    lines = []
    for cls, group in summary["classes"].items():
        if not group["jobs"]:
            continue
        e2e, slo = group["latency_ms"]["e2e"], group["slo"]
        pcts = " ".join(f"p{p}={_ms(e2e[f'p{p}'])}" for p in PERCENTILES)
        errors = ", ".join(f"{k} {v}" for k, v in slo["errors"].items()) or "none"
        lines.append(
            f"  {cls:<11} jobs={group['jobs']:<6} {pcts}  attainment={slo['attainment']:.1%} "
            f"(slo missed {slo['slo_missed']}, errors: {errors}, "
            f"unattributed {slo['unattributed']})"
        )
    jobs_per_s = summary["throughput"]["jobs_per_s"]
    window = summary["window_s"]
    lines.append(
        f"  overall     jobs={summary['jobs']} attainment={_pct(summary['slo']['attainment'])} "
        f"throughput={'n/a' if jobs_per_s is None else f'{jobs_per_s:.2f}'} jobs/s over "
        f"{'n/a' if window is None else f'{window:.1f}'} s (client-side latency, Locust)"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def convert(csv_prefix: str | Path, out: str | Path, json_path: str | Path | None = None) -> Path:
    """Read a run, write OUT/summary.json, print the per-class lines; returns the path."""
    summary = summarize_locust(read_locust(csv_prefix, json_path))
    path = write_summary(summary, Path(out) / "summary.json")
    print(format_locust_summary(summary))
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------- command line
def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv-prefix", required=True, help="what `locust --csv` was given")
    parser.add_argument(
        "--json", default=None, help="locust's --json-file output (default: PREFIX.json if there)"
    )
    parser.add_argument("--out", required=True, help="directory for summary.json")


def _run(args: argparse.Namespace) -> int:
    convert(args.csv_prefix, args.out, args.json)
    return 0


def add_locust_report_parser(subparsers: argparse._SubParsersAction) -> None:
    """`mlws locust-report`: the same converter as `python -m loadgen.locust_report`."""
    parser = subparsers.add_parser(
        "locust-report", help="turn a Locust run's CSVs into the project's summary.json"
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loadgen.locust_report`: exit 0, or 2 with one line for a missing/bad file."""
    parser = argparse.ArgumentParser(prog="python -m loadgen.locust_report", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"locust-report: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
