"""Soak: mixed load on `mlws serve` for a long time, watching memory and tail latency.

Starts the gateway with the default priority layout, every lane a worker
process (`--kind thread` keeps the default kinds), measures its interactive
capacity (closed loop, as bench_slo_promise.py), then sends Poisson arrivals at
`--load` of it — 70 % interactive batch-1, 30 % batch jobs of 16 images, open
loop, latency from each scheduled send time — window after window. After each
window it prints the resident memory of the server and of its lane workers, the
interactive p99 and attainment, and the requests without an answer.

Verdict: RSS growth from the first window after `--warmup-min` to the last
(goal < 5 %), and p99 drift, the median p99 of the last third of the windows
over that of the first third after warm-up (goal < 10 %); no request may go
unanswered. Exit 0 when it ran to the end (the verdict is a finding, not a
test), 1 when a request went unanswered.

    python benchmarks/soak.py --minutes 30            # the full soak
    python benchmarks/soak.py --minutes 1 --window-s 20 --warmup-min 0   # a smoke run

Last line: one JSON object with every window and the verdict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import child_pid, emit_json
from benchmarks.slo_runs import arrivals_at, class_figures, closed_loop_rate, send_open_loop
from loadgen.gateway_process import gateway
from server.config import default_lane_groups

INTERACTIVE_SHARE = 0.7
BATCH_SAMPLES = 16
MEAN_SAMPLES = INTERACTIVE_SHARE + (1 - INTERACTIVE_SHARE) * BATCH_SAMPLES
MIB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    p.add_argument("--window-s", type=float, default=60.0, help="one measurement window")
    p.add_argument("--warmup-min", type=float, default=5.0, help="minutes before the baseline")
    p.add_argument("--load", type=float, default=0.5, help="fraction of measured capacity")
    p.add_argument("--capacity-s", type=float, default=10.0, help="closed-loop capacity run")
    p.add_argument("--kind", choices=["process", "thread"], default="process")
    args = p.parse_args(argv)
    if not (args.minutes > 0 and args.window_s > 0 and 0 < args.load <= 2):
        p.error("--minutes and --window-s must be > 0, --load in (0, 2]")
    if args.warmup_min >= args.minutes:
        p.error("--warmup-min must be shorter than --minutes")
    return args


def gateway_config(kind: str) -> dict[str, Any]:
    """The default layout; with `process`, every lane group a worker process per lane."""
    groups = default_lane_groups(psutil.cpu_count() or 1)
    if kind == "process":
        groups = [{**g, "kind": "process"} for g in groups]
    return {"scheduler": {"lane_groups": groups}, "lanes": {"kind": kind}}


def rss_mib(pid: int | None) -> tuple[float, float]:
    """Resident memory of the server process and of its children (the lane workers)."""
    if pid is None:
        return float("nan"), float("nan")
    server = psutil.Process(pid)
    children = sum(c.memory_info().rss for c in server.children(recursive=True))
    return server.memory_info().rss / MIB, children / MIB


def one_window(url: str, rate: float, seconds: float, index: int, pid: int | None) -> dict:
    arrivals = arrivals_at(rate, seconds, 1000 + index, INTERACTIVE_SHARE, BATCH_SAMPLES)
    sent = send_open_loop(url, arrivals, timeout_s=30.0)
    inter, batch = class_figures(sent, "interactive"), class_figures(sent, "batch")
    server, workers = rss_mib(pid)
    return {
        "window": index,
        "end_min": (index + 1) * seconds / 60,
        "server_rss_mib": server,
        "workers_rss_mib": workers,
        "interactive_sent": inter["sent"],
        "interactive_p99_ms": inter["p99_ms"],
        "interactive_attainment": inter["attainment"],
        "batch_attainment": batch["attainment"],
        "unanswered": inter["unanswered"] + batch["unanswered"],
    }


def verdict(windows: list[dict], warmup_min: float) -> dict[str, Any]:
    """RSS growth and p99 drift after warm-up (see the module docstring)."""
    after = [w for w in windows if w["end_min"] > warmup_min] or windows[-1:]
    first, last = after[0], after[-1]
    total = [w["server_rss_mib"] + w["workers_rss_mib"] for w in (first, last)]
    third = max(1, len(after) // 3)
    early = statistics.median(w["interactive_p99_ms"] for w in after[:third])
    late = statistics.median(w["interactive_p99_ms"] for w in after[-third:])
    return {
        "server_rss_growth": last["server_rss_mib"] / first["server_rss_mib"] - 1,
        "total_rss_growth": total[1] / total[0] - 1,
        "p99_drift": late / early - 1,
        "unanswered": sum(w["unanswered"] for w in windows),
        "from_min": first["end_min"],
        "to_min": last["end_min"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    windows: list[dict] = []
    with gateway(gateway_config(args.kind), ready_timeout_s=600) as url:
        pid = child_pid("-m mlws serve")
        clients = 2 * default_lane_groups(psutil.cpu_count() or 1)[0]["count"]
        closed_loop_rate(url, clients, 2.0)  # warm the connections and the online model
        capacity = closed_loop_rate(url, clients, args.capacity_s)
        rate = args.load * capacity / MEAN_SAMPLES
        print(f"capacity {capacity:.1f} req/s; soaking at {rate:.2f} jobs/s", flush=True)
        for i in range(max(1, round(args.minutes * 60 / args.window_s))):
            w = one_window(url, rate, args.window_s, i, pid)
            windows.append(w)
            print(
                f"  {w['end_min']:6.1f} min  server {w['server_rss_mib']:7.1f} MiB  workers "
                f"{w['workers_rss_mib']:7.1f} MiB  interactive p99 {w['interactive_p99_ms']:6.1f}"
                f" ms, {w['interactive_attainment']:.4f} of {w['interactive_sent']}  "
                f"no answer {w['unanswered']}",
                flush=True,
            )
    v = verdict(windows, args.warmup_min)
    ok = v["total_rss_growth"] < 0.05 and v["p99_drift"] < 0.10
    print(
        f"verdict: {'flat' if ok else 'DRIFT'}: RSS {v['total_rss_growth']:+.1%} (server "
        f"{v['server_rss_growth']:+.1%}), p99 {v['p99_drift']:+.1%} from minute "
        f"{v['from_min']:.1f} to {v['to_min']:.1f}; {v['unanswered']} without an answer",
        flush=True,
    )
    emit_json({"capacity": capacity, "rate": rate, "windows": windows, "verdict": v})
    return 1 if v["unanswered"] else 0


if __name__ == "__main__":
    sys.exit(main())
