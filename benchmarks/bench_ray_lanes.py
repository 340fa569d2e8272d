"""Ray lanes against thread lanes on one machine: added latency per dispatch, and efficiency.

Two gateways run side by side on 127.0.0.1 with the same lane layout: ResNet-18 on
ONNX Runtime fp32, `--lanes` lanes × `--threads` intra-op threads, the gateway's
default scheduler. One has thread lanes; the other `lanes.kind: ray` with no
cluster address, so it starts a local Ray instance (loopback) and each lane is a
Ray actor with its own runner, tensors going through Ray. Each repetition has two
phases, and each phase runs raw, thread and ray once in `rep_order` (the order is
reversed on odd repetitions):

- latency: interactive batch_size=1 requests, open-loop Poisson (fixed seed, the
  same arrivals for both gateways) at `--load` of the capacity the raw P50 implies
  on the lanes (≤ `--max-rate`/s), through `--client` (default: the lean one,
  benchmarks.common.LeanHttp). Added latency = the gateway's e2e P50 (from each
  request's scheduled send time) − the raw runner's P50 service time (1 thread,
  batch 1, in a loop); per dispatch, ray − thread. The gateway's own view is shown
  beside it: its service P50 (dispatch to completion, on its event loop's clock), so
  ray − thread of it is the lane hop alone.
- efficiency: `--concurrency` closed-loop clients each keep one batch-class
  `--batch-size` request in flight (bench_gateway_efficiency.closed_loop). The
  samples/s inside the window are divided by the raw backend's (one Python thread
  per lane, each with its own runner, batches in a tight loop), for each gateway;
  ray ÷ thread is their ratio.

Both gateways stay up for the whole run: each is measured with the other idle
beside it. For the Ray one, idle means its control processes (GCS, raylet, agents)
and idle actors; `[idle N %]` is the CPU the idle gateway's processes used
meanwhile. `cpu ms/sample` counts every process of the gateway under test (for Ray:
actors, raylet and GCS included). `[others N %]` is the CPU of everything else.

    python benchmarks/bench_ray_lanes.py [--quick] [--repeats 3] [--requests 60]

Ends with one JSON line of the figures (medians over repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import Runner
from benchmarks.bench_gateway_efficiency import (
    WORKLOAD,
    GatewayRun,
    LoadShape,
    Probe,
    closed_loop,
    cpu_ms_per_sample,
    gateway_config,
    request_kwargs,
)
from benchmarks.bench_gateway_overhead import (
    Row,
    poisson,
    raw_runs,
    summarise_answers,
    warm_gateway,
)
from benchmarks.common import (
    CLIENTS,
    Answer,
    OtherCpu,
    RawRun,
    child_pids,
    descendants,
    emit_json,
    load_runners,
    median,
    open_loop,
    p50,
    raw_latencies_ms,
    raw_throughput,
    rep_order,
    synthetic_input,
    tree_cpu_s,
)
from loadgen.gateway_process import gateway

KINDS = ("thread", "ray")
#: Other processes' CPU (percent of one core) above which the run is flagged as disturbed.
DISTURBED_PCT = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --quick: one short repetition (about a minute, most of it start-up)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per lane")
    parser.add_argument(
        "--requests", type=int, default=60, help="latency: requests per gateway per repetition"
    )
    parser.add_argument("--load", type=float, default=0.10, help="fraction of the lanes' capacity")
    parser.add_argument("--max-rate", type=float, default=20.0, help="requests/s cap")
    parser.add_argument("--client", choices=CLIENTS, default="lean")
    parser.add_argument("--raw-seconds", type=float, default=1.0, help="raw loop per repetition")
    parser.add_argument(
        "--paced-runs", type=int, default=12, help="raw runs at the request pace per repetition"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="efficiency: measured span")
    parser.add_argument("--warmup", type=float, default=1.0, help="efficiency: unmeasured start")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=6, help="requests kept in flight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, help="write each gateway's output here")
    parser.add_argument("--quick", action="store_true", help="one short repetition (~1 min)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.requests, args.seconds = 1, 12, 2.0
        args.raw_seconds, args.paced_runs = 0.5, 8
    return args


def gateway_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per lane kind, the gateway under test: the same layout, thread lanes or Ray lanes
    (actors on a local Ray instance the gateway starts)."""
    thread = gateway_config(args.lanes, args.threads, True, "default")
    ray_lanes = {**thread["lanes"], "kind": "ray", "ray": {"address": None}}
    return {"thread": thread, "ray": {**thread, "lanes": ray_lanes}}


@dataclass
class Setup:
    """What every repetition uses: options, raw runners and inputs, the running gateways."""

    args: argparse.Namespace
    runners: list[Runner]
    #: The latency phase's single sample and the efficiency phase's batch.
    single: np.ndarray
    batch: np.ndarray
    #: Interactive requests per second in the latency phase.
    rate: float
    urls: dict[str, str]
    #: Each gateway's `mlws serve` process (its Ray processes are below it).
    pids: dict[str, int | None]
    others: OtherCpu = field(init=False)

    def __post_init__(self) -> None:
        # Everything this run started counts as ours: the gateways and Ray's processes.
        self.others = OtherCpu(descendants(os.getpid())[1:])


@contextlib.contextmanager
def gateways(args: argparse.Namespace) -> Iterator[tuple[dict[str, str], dict[str, int | None]]]:
    """Both gateways, started one after the other: (URL, serve pid) per lane kind."""
    configs = gateway_configs(args)
    urls: dict[str, str] = {}
    pids: dict[str, int | None] = {}
    with contextlib.ExitStack() as stack:
        for kind in KINDS:
            log = args.log_dir / f"{kind}.log" if args.log_dir else None
            urls[kind] = stack.enter_context(gateway(configs[kind], log=log))
            started = [p for p in child_pids("-m mlws serve") if p not in pids.values()]
            pids[kind] = started[-1] if started else None
            warm_gateway(urls[kind], [WORKLOAD])
        yield urls, pids


@dataclass
class Lap:
    """CPU used between `Lap.start` and `Lap.stop`: per gateway and by other processes."""

    pids: dict[str, int | None]
    others: OtherCpu
    _t0: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)

    def start(self) -> Lap:
        self.others.lap()
        self._cpu0 = {k: tree_cpu_s(p) for k, p in self.pids.items()}
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core: each gateway's processes (by kind), and "others"."""
        scale = 100.0 / (time.perf_counter() - self._t0)
        out = {k: (tree_cpu_s(p) - self._cpu0[k]) * scale for k, p in self.pids.items()}
        out["others"] = self.others.lap()
        return out


@dataclass
class Repetition:
    """One repetition: latency rows and throughput runs per gateway, with their CPU."""

    rows: dict[str, Row] = field(default_factory=dict)
    raw: RawRun = field(default_factory=lambda: RawRun(float("nan"), float("nan")))
    runs: dict[str, GatewayRun] = field(default_factory=dict)
    #: (phase, what ran) → CPU while it ran (Lap.stop).
    cpu: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


def latency_phase(setup: Setup, rep: int, out: Repetition) -> None:
    """Raw run times, then the same Poisson arrivals through each gateway."""
    args = setup.args
    arrivals = poisson(WORKLOAD, setup.rate, args.requests, args.seed + rep)
    raw_ms: dict[str, list[float]] = {}
    answers: dict[str, list[Answer]] = {}
    for what in rep_order(rep, ("raw", *KINDS)):
        lap = Lap(setup.pids, setup.others).start()
        if what == "raw":
            raw_ms = raw_runs(setup.runners[0], setup.single, args, arrivals)
        else:
            answers[what] = open_loop(setup.urls[what], arrivals, (args.client,))
        out.cpu["latency", what] = lap.stop()
    for kind in KINDS:
        disturbed = max(out.cpu["latency", w]["others"] for w in ("raw", kind))
        out.rows[kind] = summarise_answers(raw_ms, answers[kind], disturbed)


def efficiency_phase(setup: Setup, rep: int, out: Repetition) -> None:
    """The raw backend's throughput, then each gateway's at saturation."""
    args = setup.args
    shape = LoadShape(
        request_kwargs(False, setup.batch),
        len(setup.batch),
        args.concurrency,
        args.warmup,
        args.seconds,
    )
    for what in rep_order(rep, ("raw", *KINDS)):
        lap = Lap(setup.pids, setup.others).start()
        if what == "raw":
            out.raw = raw_throughput(setup.runners, setup.batch, args.warmup, args.seconds)
        else:
            # No thread split: a Ray gateway's lanes are other processes (counted by Lap).
            probe = Probe(setup.urls[what], None, args.lanes)
            out.runs[what] = asyncio.run(closed_loop(setup.urls[what], shape, probe))
        out.cpu["efficiency", what] = lap.stop()


def idle_of(kind: str) -> str:
    """The gateway that sits idle while `kind` is measured."""
    return KINDS[1 - KINDS.index(kind)]


def print_repetition(rep: int, r: Repetition) -> None:
    """Per gateway: the latency split and the throughput of this repetition."""
    for kind in KINDS:
        row, run = r.rows[kind], r.runs[kind]
        lat, eff = r.cpu["latency", kind], r.cpu["efficiency", kind]
        print(
            f"rep {rep + 1} {kind:>6}: e2e P50 {row.e2e_p50:6.2f} ms = raw {row.raw_p50:6.2f} + "
            f"added {row.overhead:5.2f} (service {row.service_p50:6.2f}, queue "
            f"{row.queue_p50:4.2f}, outside {row.outside_p50:5.2f}; {row.failed} failed) "
            f"[idle {lat[idle_of(kind)]:.0f} %, others {lat['others']:.0f} %]; "
            f"{run.rate:6.2f} samples/s ({run.rate / r.raw.rate:.3f} of raw "
            f"{r.raw.rate:.2f}), {run.dispatches_per_s:4.1f} dispatches/s of "
            f"{run.mean_dispatch:3.1f}, {cpu_ms_per_sample(eff[kind], run.rate):5.1f} cpu "
            f"ms/sample [idle {eff[idle_of(kind)]:.0f} %, others {eff['others']:.0f} %]",
            flush=True,
        )


def per_kind(reps: list[Repetition], kind: str) -> dict[str, float]:
    """Medians over repetitions of one gateway's figures."""
    rows, runs = [r.rows[kind] for r in reps], [r.runs[kind] for r in reps]
    cpu = [r.cpu["efficiency", kind] for r in reps]
    out = {
        "added_ms": median(x.overhead for x in rows),
        "e2e_p50_ms": median(x.e2e_p50 for x in rows),
        "server_service_p50_ms": median(x.service_p50 for x in rows),
        "server_queue_p50_ms": median(x.queue_p50 for x in rows),
        "outside_server_p50_ms": median(x.outside_p50 for x in rows),
        "samples_per_s": median(x.rate for x in runs),
        "efficiency": median(x.rate / r.raw.rate for x, r in zip(runs, reps, strict=True)),
        "dispatches_per_s": median(x.dispatches_per_s for x in runs),
        "mean_dispatch_samples": median(x.mean_dispatch for x in runs),
        "cpu_ms_per_sample": median(
            cpu_ms_per_sample(c[kind], x.rate) for c, x in zip(cpu, runs, strict=True)
        ),
        "idle_cpu_pct": median(c[kind] for r in reps for (_, w), c in r.cpu.items() if w != kind),
    }
    out = {k: round(v, 3) for k, v in out.items()}
    out.update(failed=sum(x.failed for x in rows), errors=sum(x.errors for x in runs))
    return out


def summarise(reps: list[Repetition], args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """The JSON figures: per gateway (prefixed by kind), and ray against thread per repetition."""
    figures: dict[str, Any] = {}
    thread, ray = ([r.rows[k] for r in reps] for k in KINDS)
    figures["ray_added_ms_per_dispatch"] = round(
        median(b.e2e_p50 - a.e2e_p50 for a, b in zip(thread, ray, strict=True)), 3
    )
    figures["ray_service_minus_thread_ms"] = round(
        median(b.service_p50 - a.service_p50 for a, b in zip(thread, ray, strict=True)), 3
    )
    ratios = [r.runs["ray"].rate / r.runs["thread"].rate for r in reps]
    figures["ray_over_thread"] = round(median(ratios), 3)
    figures["ray_over_thread_per_repeat"] = [round(x, 3) for x in ratios]
    for kind in KINDS:
        mine = per_kind(reps, kind)
        figures[f"{kind}_added_ms"] = mine.pop("added_ms")
        figures[f"efficiency_{kind}"] = mine.pop("efficiency")
        figures.update({f"{kind}_{k}": v for k, v in mine.items()})
    figures["raw_service_p50_ms"] = round(median(r.rows["thread"].raw_p50 for r in reps), 3)
    figures["raw_paced_p50_ms"] = round(median(r.rows["thread"].raw_paced_p50 for r in reps), 3)
    figures["raw_samples_per_s"] = round(median(r.raw.rate for r in reps), 2)
    figures["raw_cpu_ms_per_sample"] = round(
        median(cpu_ms_per_sample(r.raw.cpu_pct, r.raw.rate) for r in reps), 1
    )
    others = [c["others"] for r in reps for c in r.cpu.values()]
    figures["others_cpu_pct"] = round(median(others), 1)
    figures["others_cpu_pct_max"] = round(max(others), 1)
    figures.update(
        workload=WORKLOAD,
        lanes=args.lanes,
        threads_per_lane=args.threads,
        repeats=args.repeats,
        requests=args.requests,
        rate_per_s=round(rate, 2),
        client=args.client,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        seconds=args.seconds,
    )
    return figures


def print_table(f: dict[str, Any]) -> None:
    """The medians: one column per gateway, and ray against thread."""
    lines = [
        f"{'median over repetitions':<34}{'raw':>9}{'thread':>9}{'ray':>9}  ray vs thread",
        f"{'latency P50, batch 1 (ms)':<34}{f['raw_service_p50_ms']:>9.2f}"
        f"{f['thread_e2e_p50_ms']:>9.2f}{f['ray_e2e_p50_ms']:>9.2f}"
        f"  {f['ray_added_ms_per_dispatch']:+.2f} ms per dispatch",
        f"{'  added over raw (ms)':<34}{'':>9}{f['thread_added_ms']:>9.2f}"
        f"{f['ray_added_ms']:>9.2f}",
        f"{'  gateway service P50 (ms)':<34}{'':>9}{f['thread_server_service_p50_ms']:>9.2f}"
        f"{f['ray_server_service_p50_ms']:>9.2f}  {f['ray_service_minus_thread_ms']:+.2f} ms",
        f"{'throughput, batch ' + str(f['batch_size']) + ' (samples/s)':<34}"
        f"{f['raw_samples_per_s']:>9.2f}{f['thread_samples_per_s']:>9.2f}"
        f"{f['ray_samples_per_s']:>9.2f}  × {f['ray_over_thread']:.3f}",
        f"{'  efficiency (÷ raw)':<34}{'':>9}{f['efficiency_thread']:>9.3f}"
        f"{f['efficiency_ray']:>9.3f}",
        f"{'  cpu ms/sample, all processes':<34}{f['raw_cpu_ms_per_sample']:>9.1f}"
        f"{f['thread_cpu_ms_per_sample']:>9.1f}{f['ray_cpu_ms_per_sample']:>9.1f}",
        f"{'  idle gateway cpu (% of a core)':<34}{'':>9}{f['thread_idle_cpu_pct']:>9.1f}"
        f"{f['ray_idle_cpu_pct']:>9.1f}",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Start both gateways, alternate raw, thread and ray per phase; print the medians."""
    args = parse_args(argv)
    runners = load_runners(WORKLOAD, args.lanes, args.threads)  # exports first if needed
    single = synthetic_input(WORKLOAD, 1)
    batch = synthetic_input(WORKLOAD, args.batch_size)
    # The latency phase's rate follows the raw service time, measured once up front.
    service_s = p50(raw_latencies_ms(runners[0], single, 1.0, 20)) / 1e3
    rate = min(args.load * args.lanes / service_s, args.max_rate)
    print(
        f"{WORKLOAD} onnx fp32, {args.lanes} lanes × {args.threads} thread(s), thread lanes vs "
        f"Ray lanes (local Ray); latency: {args.requests} interactive requests per gateway at "
        f"{rate:.1f}/s via {args.client}; efficiency: batch {args.batch_size}, "
        f"{args.concurrency} clients, {args.seconds:g} s after {args.warmup:g} s; "
        f"{args.repeats} repetitions",
        flush=True,
    )
    reps: list[Repetition] = []
    with gateways(args) as (urls, pids):
        setup = Setup(args, runners, single, batch, rate, urls, pids)
        for rep in range(args.repeats):
            reps.append(Repetition())
            latency_phase(setup, rep, reps[-1])
            efficiency_phase(setup, rep, reps[-1])
            print_repetition(rep, reps[-1])
    figures = summarise(reps, args, rate)
    print_table(figures)
    if figures["others_cpu_pct_max"] > DISTURBED_PCT:
        print(
            f"warning: other processes used up to {figures['others_cpu_pct_max']:.0f} % of a "
            "core while this ran: the figures are disturbed",
            flush=True,
        )
    emit_json(figures)


if __name__ == "__main__":
    main()
