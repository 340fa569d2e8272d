"""Triton's perf_analyzer beside the project's own load generator, on one gateway.

One `mlws serve` with the default serving config (ResNet-18, ONNX Runtime fp32,
the default lane layout) but a 1 s interactive SLO, its gRPC server on a port of
its own. At concurrency
1 and 2 (requests in flight), three closed-loop drivers in turn:

- ``pa_http``: perf_analyzer over KServe v2 HTTP, the binary tensor extension:
  a real 1×3×224×224 float32 tensor of zeros (588 KiB) in every request;
- ``pa_grpc``: perf_analyzer over KServe v2 gRPC (``raw_input_contents``);
- ``own``: the project's load generator, Locust's `InteractiveUser`
  (loadgen/locustfile.py) with no think time and one user per slot, so a
  closed loop of the same concurrency: POST /infer with ``batch_size: 1``, the
  input synthesized by the gateway (a request of a hundred bytes).

Every request is a single sample, so the gateway treats all three alike
(interactive class). The SLO is raised because at concurrency 2 two ResNet-18
requests share two cores (about 75 ms each), which admission forecasts past the
default 100 ms budget and refuses (429), and perf_analyzer stops at its first
error: the figures compare the drivers, not admission. Each driver reports its
own client-side figures: throughput (requests/s) and P50/P99 latency (send to
answer); Locust also its failed requests (``own_c<c>_errors``, SLO misses aside).
perf_analyzer measures three windows of `--window-ms` after a few unmeasured
requests (its stability search is off: every window is kept); Locust runs
three windows' worth, counted from its first request (it has no warm-up),
at millisecond resolution. The ratios perf_analyzer ÷ own show what moving a
real tensor over either protocol costs beside a synthesized one: throughput
ratios below 1 and latency ratios above 1 are that cost.

    python benchmarks/bench_perf_analyzer.py [--window-ms 4000] [--concurrency 1,2]

Ends with one JSON line: per driver and concurrency ``<driver>_c<c>_{rps,p50_ms,
p99_ms}``, and ``pa_http_c<c>_rps_ratio`` etc. (perf_analyzer ÷ own).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ONNX_DIR, OtherCpu, child_pid, emit_json
from loadgen.gateway_process import gateway
from loadgen.locust_report import read_locust, summarize_locust
from loadgen.triton_perf import command, read_report, time_windows

ROOT = Path(__file__).resolve().parents[1]
MODEL = "resnet18"
DRIVERS = ("pa_http", "pa_grpc", "own")
#: Unmeasured requests perf_analyzer sends first (ONNX Runtime's first runs are slow).
WARMUP = 10
#: Room for two requests sharing the cores: no refusals to stop perf_analyzer.
INTERACTIVE_SLO_MS = 1000
#: The most one driver's run may take before it counts as failed.
RUN_TIMEOUT_S = 120
NAN = float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--window-ms", type=int, default=4000, help="one measurement window")
    parser.add_argument("--concurrency", default="1,2", help="comma-separated levels")
    parser.add_argument("--log", type=Path, default=None, help="the gateway's output")
    return parser.parse_args(argv)


def perf_analyzer(
    url: str, protocol: str, c: int, window_ms: int, folder: Path
) -> dict[str, float]:
    """perf_analyzer at concurrency `c`: 3 windows, each kept (stability search off)."""
    report = folder / f"pa_{protocol}_c{c}.csv"
    measure = [*time_windows(window_ms), "--warmup-request-count", str(WARMUP)]
    argv = command(MODEL, url, protocol, (c, c), report, measure)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0 or not report.is_file():
        print(f"perf_analyzer {protocol} c={c} failed:\n{(done.stdout + done.stderr)[-1500:]}")
        return {"rps": NAN, "p50_ms": NAN, "p99_ms": NAN}
    (level,) = read_report(report)
    return {"rps": level.throughput, "p50_ms": level.p50_ms, "p99_ms": level.p99_ms}


def own_loadgen(url: str, c: int, seconds: float, folder: Path) -> dict[str, float]:
    """Locust's InteractiveUser × `c`, no think time, for `seconds`."""
    prefix = folder / f"own_c{c}"
    argv = [sys.executable, "-m", "locust", "-f", "loadgen/locustfile.py", "InteractiveUser"]
    argv += ["--headless", "-u", str(c), "-r", str(c), "-t", f"{math.ceil(seconds)}s"]
    argv += ["--host", url, "--csv", str(prefix), "--json-file", str(prefix), "--only-summary"]
    argv += ["--mlws-model", MODEL, "--wait-min", "0", "--wait-max", "0"]
    argv += ["--exit-code-on-error", "0", "--loglevel", "WARNING"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        print(f"locust c={c} failed:\n{(done.stdout + done.stderr)[-1500:]}")
        return {"rps": NAN, "p50_ms": NAN, "p99_ms": NAN}
    summary = summarize_locust(read_locust(prefix))
    e2e = summary["latency_ms"]["e2e"]
    errors = sum(summary["slo"]["errors"].values()) + summary["slo"]["unattributed"]
    rps = summary["throughput"]["jobs_per_s"]
    return {"rps": rps, "p50_ms": e2e["p50"], "p99_ms": e2e["p99"], "errors": errors}


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the drivers, once waited for)."""
    times = os.times()
    return times.children_user + times.children_system


def measure(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    """Every driver at every level against one gateway; the figures, keyed flat."""
    config = {
        "models": [{"name": MODEL}],
        "onnx_dir": str(ONNX_DIR),
        "grpc_port": 0,
        "slo_ms": {"interactive": INTERACTIVE_SLO_MS},
    }
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, gateway(config, log=args.log) as url:
        folder = Path(tmp)
        http_hostport = url.removeprefix("http://")
        # grpc_port 0 picks a free port; the gateway says which.
        grpc_port = httpx.get(f"{url}/v1/models", timeout=30).json()["grpc_port"]
        others = OtherCpu([child_pid("-m mlws serve")])
        for c in levels:
            for driver in DRIVERS:
                others.lap()
                start, children = time.perf_counter(), children_cpu_s()
                if driver == "own":
                    got = own_loadgen(url, c, 3 * args.window_ms / 1e3, folder)
                else:
                    where = http_hostport if driver == "pa_http" else f"127.0.0.1:{grpc_port}"
                    protocol = driver.removeprefix("pa_")
                    got = perf_analyzer(where, protocol, c, args.window_ms, folder)
                # The driver is a child of this process: its CPU is not "others".
                driver_pct = (children_cpu_s() - children) * 100 / (time.perf_counter() - start)
                got["others_cpu_pct"] = max(0.0, others.lap() - driver_pct)
                print(
                    f"c={c} {driver:8s} {got['rps']:7.1f} req/s  p50 {got['p50_ms']:7.1f} ms  "
                    f"p99 {got['p99_ms']:7.1f} ms  [others {got['others_cpu_pct']:.0f} %]"
                    + (f"  errors {got['errors']:.0f}" if "errors" in got else ""),
                    flush=True,
                )
                figures.update({f"{driver}_c{c}_{k}": round(v, 3) for k, v in got.items()})
    return figures


def ratios(figures: dict[str, Any], levels: list[int]) -> dict[str, float]:
    """perf_analyzer ÷ own, per protocol, level and figure."""
    out = {}
    for c in levels:
        for driver in ("pa_http", "pa_grpc"):
            for key in ("rps", "p50_ms", "p99_ms"):
                own = figures[f"own_c{c}_{key}"]
                mine = figures[f"{driver}_c{c}_{key}"]
                out[f"{driver}_c{c}_{key}_ratio"] = round(mine / own, 3) if own else NAN
    return out


def main(argv: list[str] | None = None) -> None:
    """Run every driver at every level; print each figure, the ratios, then the JSON line."""
    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"{MODEL}, default serving config but a {INTERACTIVE_SLO_MS} ms interactive SLO; closed "
        f"loops at concurrency {levels}: perf_analyzer "
        f"(HTTP, gRPC; 3 windows of {args.window_ms} ms) and Locust InteractiveUser (own)",
        flush=True,
    )
    figures = measure(args, levels)
    figures.update(ratios(figures, levels))
    for c in levels:
        for driver in ("pa_http", "pa_grpc"):
            r = {k: figures[f"{driver}_c{c}_{k}_ratio"] for k in ("rps", "p50_ms", "p99_ms")}
            print(
                f"c={c} {driver} ÷ own: throughput {r['rps']:.2f}, p50 {r['p50_ms']:.2f}, "
                f"p99 {r['p99_ms']:.2f}",
                flush=True,
            )
    figures.update(model=MODEL, concurrency=levels, window_ms=args.window_ms)
    emit_json(figures)


if __name__ == "__main__":
    main()
