"""The SLO promise, live: mixed load at 0.7 of capacity and overload at 2× and 5×.

One run, on this machine, in this order:

1. raw: ResNet-18 on ONNX Runtime called directly — batch-1 run time on the
   interactive lanes' thread count, 1-thread times at batch 1-16 (the batch
   lanes), and the raw batch samples/s of the batch lanes (one 1-thread runner
   per batch lane, batch 16, in a tight loop);
2. capacity: `mlws serve` with its default config (priority lanes), interactive
   batch-1 requests from two closed-loop clients per interactive lane (one
   running, one queued: the lanes never wait for a client, and admission never
   has to refuse): answered requests/s;
3. mixed, `--repeats` times: Poisson arrivals at 0.7 × capacity (in images/s),
   70 % interactive batch-1 and 30 % batch jobs of 16 images, sent open loop to
   mlws and, on the very same arrivals, to the plain baseline
   (benchmarks/baseline_server.py: FastAPI + ONNX Runtime in its thread pool, no
   batching, no classes); the order alternates per repetition;
4. overload: interactive batch-1 at 2× and 5× capacity for `--overload-s`
   seconds each, to mlws and to the baseline;
5. the simulated twin: the same arrivals through the same scheduling core on a
   virtual clock, lanes timed by step 1 and sharing the machine's cores by
   priority (scheduling/cpu_share.py), each request also costing the event-loop
   CPU per request measured on the gateway's main thread during step 4.

Attainment counts every request sent: refused, shed, failed and late ones are
misses. Latency runs from the scheduled send time.

    python benchmarks/bench_slo_promise.py [--mixed-s 240] [--repeats 3] [--quick]

Last line: one JSON object with the figures (medians over repetitions, and each
repetition's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    ONNX_DIR,
    child_pid,
    emit_json,
    load_runners,
    raw_latencies_ms,
    raw_throughput,
    synthetic_input,
    thread_cpu,
)
from benchmarks.slo_runs import (
    WORKLOAD,
    arrivals_at,
    class_figures,
    closed_loop_rate,
    overload_figures,
    send_open_loop,
    simulate_twin,
    twin_models,
)
from loadgen.gateway_process import free_port, gateway, wait_ready
from server.config import GatewayConfig

INTERACTIVE_SHARE = 0.7
BATCH_SAMPLES = 16
MEAN_SAMPLES = INTERACTIVE_SHARE + (1 - INTERACTIVE_SHARE) * BATCH_SAMPLES


def measure_raw(inter_threads: int, batch_lanes: int, quick: bool) -> dict[str, Any]:
    """Run times straight from ONNX Runtime, and the batch lanes' raw samples/s."""
    seconds = 1.0 if quick else 3.0
    [inter] = load_runners(WORKLOAD, 1, inter_threads)
    inter_ms = {
        n: statistics.median(raw_latencies_ms(inter, synthetic_input(WORKLOAD, n), seconds, 5))
        for n in (1, 2, 4)
    }
    runners = load_runners(WORKLOAD, batch_lanes, 1)
    batch_ms = {
        n: statistics.median(raw_latencies_ms(runners[0], synthetic_input(WORKLOAD, n), seconds, 3))
        for n in (1, 2, 4, 8, 16)
    }
    runs = raw_latencies_ms(inter, synthetic_input(WORKLOAD, 1), seconds, 20)
    jitter = float(np.std(np.log(runs)))
    batch = synthetic_input(WORKLOAD, BATCH_SAMPLES)
    rate = raw_throughput(runners, batch, warmup_s=1.0, seconds=seconds * 2).rate
    return {"interactive_ms": inter_ms, "batch_ms": batch_ms, "jitter": jitter, "batch_rate": rate}


@contextmanager
def baseline_server() -> Any:
    """The plain baseline on a free port, as a child process."""
    port = free_port()
    script = Path(__file__).with_name("baseline_server.py")
    onnx = ONNX_DIR / f"{WORKLOAD}.onnx"
    cmd = [sys.executable, str(script), "--onnx", str(onnx), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, 120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def mixed_rep(urls: dict[str, str], rate: float, args: argparse.Namespace, rep: int) -> dict:
    arrivals = arrivals_at(rate, args.mixed_s, 100 + rep, INTERACTIVE_SHARE, BATCH_SAMPLES)
    order = ["mlws", "baseline"] if rep % 2 == 0 else ["baseline", "mlws"]
    out: dict[str, Any] = {"arrivals": arrivals}
    for name in order:
        sent = send_open_loop(urls[name], arrivals, timeout_s=30.0)
        wait_idle(urls[name])
        out[name] = sent
        inter, batch = class_figures(sent, "interactive"), class_figures(sent, "batch")
        print(
            f"  mixed rep {rep} {name:<8} interactive {inter['attainment']:.4f} of "
            f"{inter['sent']} ({_misses(inter)})  batch {batch['attainment']:.4f} of "
            f"{batch['sent']} ({_misses(batch)})",
            flush=True,
        )
    return out


def wait_idle(url: str) -> None:
    """Wait until a server has finished what the client gave up on.

    The baseline keeps computing requests whose client timed out (nothing cancels
    them); without this its backlog would run on into the next measurement. Its
    readiness route is a plain `def`, so it answers only once the thread pool has
    worked through what was queued before it.
    """
    httpx.get(f"{url}/readyz", timeout=600)


def _misses(f: dict[str, Any]) -> str:
    return (
        f"late {f['late']}, refused {f['refused']}, shed {f['shed']}, "
        f"no answer {f['unanswered']}; ok p99 {f['p99_ms']:.0f} ms"
    )


def overload_run(
    urls: dict[str, str], rate: float, seconds: float, seed: int, pid: int | None
) -> dict:
    """One overload level on both servers, and the gateway's event-loop CPU per request."""
    arrivals = arrivals_at(rate, seconds, seed, 1.0, 1)
    out: dict[str, Any] = {"arrivals": arrivals}
    for name, url in urls.items():
        before = thread_cpu(pid).get(pid or 0, 0.0) if name == "mlws" else 0.0
        out[name] = send_open_loop(url, arrivals, timeout_s=10.0)
        wait_idle(url)
        if name == "mlws":
            used = thread_cpu(pid).get(pid or 0, 0.0) - before
            out["request_cpu_s"] = used / len(arrivals) if arrivals else 0.0
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    config = GatewayConfig()  # the default `mlws serve` runs on this machine
    inter_group, batch_group = config.scheduler.groups()
    raw = measure_raw(config.lanes.threads(inter_group), batch_group.count, args.quick)
    print(
        f"raw: interactive {raw['interactive_ms']} ms, batch {raw['batch_ms']} ms, "
        f"batch lanes {raw['batch_rate']:.1f} samples/s",
        flush=True,
    )
    with gateway({}, ready_timeout_s=600) as mlws_url, baseline_server() as base_url:
        urls = {"mlws": mlws_url, "baseline": base_url}
        clients = 2 * inter_group.count
        closed_loop_rate(mlws_url, clients, 2.0)  # warm the connections and the online model
        capacity = closed_loop_rate(mlws_url, clients, args.capacity_s)
        print(f"capacity: {capacity:.1f} interactive requests/s", flush=True)
        rate = 0.7 * capacity / MEAN_SAMPLES
        mixed = [mixed_rep(urls, rate, args, rep) for rep in range(args.repeats)]
        pid = child_pid("-m mlws serve")
        overload = {
            f: overload_run(urls, f * capacity, args.overload_s, 200 + int(f), pid)
            for f in (2.0, 5.0)
        }
    cpus = [o["request_cpu_s"] for o in overload.values() if o["request_cpu_s"] > 0]
    request_cpu_s = float(np.median(cpus)) if cpus else 0.0
    print(f"gateway event loop: {request_cpu_s * 1e3:.2f} ms CPU per request", flush=True)
    models = twin_models(raw["interactive_ms"], raw["batch_ms"], ["interactive", "batch"])

    def twin(arrivals: list) -> list:
        return simulate_twin(
            config.scheduler, arrivals, models, raw["jitter"], cores, request_cpu_s
        )

    for m in mixed:
        m["twin"] = twin(m["arrivals"])
    for o in overload.values():
        o["twin"] = twin(o["arrivals"])
    return {
        "raw": raw,
        "capacity": capacity,
        "rate": rate,
        "mixed": mixed,
        "overload": overload,
        "request_cpu_s": request_cpu_s,
    }


def summarize_mixed(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    per_rep = []
    for m in result["mixed"]:
        row: dict[str, Any] = {}
        for who in ("mlws", "baseline", "twin"):
            inter, batch = class_figures(m[who], "interactive"), class_figures(m[who], "batch")
            row[who] = {
                "interactive_sent": inter["sent"],
                "interactive_attainment": inter["attainment"],
                "batch_sent": batch["sent"],
                "batch_attainment": batch["attainment"],
                "batch_samples_per_s": batch["ok_samples"] / seconds,
                "unanswered": inter["unanswered"] + batch["unanswered"],
            }
        row["mlws"]["batch_rate_vs_raw"] = (
            row["mlws"]["batch_samples_per_s"] / result["raw"]["batch_rate"]
        )
        per_rep.append(row)
    return {"per_rep": per_rep}


def summarize_overload(result: dict[str, Any], seconds: float) -> dict[str, Any]:
    cap = result["capacity"]
    return {
        f"{factor:g}x": {
            who: overload_figures(o[who], seconds, cap) for who in ("mlws", "baseline", "twin")
        }
        for factor, o in result["overload"].items()
    }


def median_of(rows: list[dict], who: str, key: str) -> float:
    return float(np.median([r[who][key] for r in rows]))


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    mixed = summarize_mixed(result, args.mixed_s)["per_rep"]
    over = summarize_overload(result, args.overload_s)
    figures: dict[str, Any] = {
        "capacity_rps": result["capacity"],
        "mixed_rate_rps": result["rate"],
        "request_cpu_ms": result["request_cpu_s"] * 1e3,
    }
    print("\nmixed at 0.7 of capacity (attainment of all sent; median over repetitions):")
    print(f"{'':10}{'interactive':>14}{'batch':>10}{'batch/s':>10}{'n inter':>9}")
    for who in ("mlws", "baseline", "twin"):
        a, b = (
            median_of(mixed, who, "interactive_attainment"),
            median_of(mixed, who, "batch_attainment"),
        )
        rate = median_of(mixed, who, "batch_samples_per_s")
        n = sum(r[who]["interactive_sent"] for r in mixed)
        spread = [round(r[who]["interactive_attainment"], 4) for r in mixed]
        print(f"{who:10}{a:>14.4f}{b:>10.4f}{rate:>10.1f}{n:>9}  reps {spread}")
        figures[f"{who}_interactive_attainment"] = a
        figures[f"{who}_batch_attainment"] = b
        figures[f"{who}_interactive_reps"] = spread
        figures[f"{who}_interactive_sent"] = n
    figures["batch_rate_vs_raw"] = median_of(mixed, "mlws", "batch_rate_vs_raw")
    for cls in ("interactive", "batch"):
        base = figures[f"baseline_{cls}_attainment"]
        figures[f"{cls}_mlws_over_baseline"] = (
            figures[f"mlws_{cls}_attainment"] / base if base else None
        )
    print(
        f"mlws ÷ baseline: interactive {figures['interactive_mlws_over_baseline']}, "
        f"batch {figures['batch_mlws_over_baseline']}; batch samples/s ÷ raw "
        f"{figures['batch_rate_vs_raw']:.3f}"
    )
    print("\noverload, interactive batch-1:")
    for factor, rows in over.items():
        for who, f in rows.items():
            print(
                f"  {factor:>3} {who:8} goodput/capacity {f['goodput_ratio']:.3f}  "
                f"no answer {f['unanswered']}  refusal p99 {f['refusal_p99_ms']:.1f} ms  "
                f"admitted late {f['admitted_late_share']:.4f}  (sent {f['sent']})"
            )
            for key in ("goodput_ratio", "unanswered", "refusal_p99_ms", "admitted_late_share"):
                figures[f"overload_{factor}_{who}_{key}"] = f[key]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-s", type=float, default=240.0, help="seconds per mixed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overload-s", type=float, default=20.0)
    parser.add_argument("--capacity-s", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="a 1-minute smoke run")
    args = parser.parse_args()
    if args.quick:
        args.mixed_s, args.repeats, args.overload_s, args.capacity_s = 20.0, 1, 5.0, 4.0
    result = run(args)
    emit_json(report(result, args))


if __name__ == "__main__":
    main()
