"""Gateway efficiency: samples/s served over HTTP at saturation ÷ the raw backend's.

ResNet-18 on ONNX Runtime, fp32, on `--lanes` thread lanes of `--threads` intra-op
threads each (default 2 × 1: a 2-core machine).

- raw: one Python thread per lane, each owning its own runner, runs batches of
  `--batch-size` in a tight loop (ONNX Runtime releases the GIL, so they overlap);
- gateway (JSON): `--concurrency` closed-loop async clients each keep one
  `{"batch_size": N, "class": "batch"}` request in flight (synthetic input; the
  gateway's default scheduler unless --max-dispatch-ms / --no-microbatch);
- gateway (binary): the same, but every request carries a real N×3×224×224
  float32 tensor as `application/octet-stream`.

Each is counted over `--seconds` after `--warmup` (`benchmarks.common.window_rate`);
the three alternate within a repetition (order reversed on odd repetitions), the
ratios are taken per repetition and their median is quoted. Short runs, many
repetitions: on a shared machine the speed of the same loop drifts by ±20 % within
a minute, so what matters is that baseline and gateway run close together.

For attribution each run also prints the dispatches/s and mean dispatch size (the
gateway's /metrics), the CPU of each lane thread, of the event loop, of other
server threads (binary decoding) and of this client, and the lane CPU spent per
sample (compare with the raw loop's: equal means the lanes lose nothing but idle
time; higher means each sample costs more, e.g. smaller dispatches).

    python benchmarks/bench_gateway_efficiency.py [--quick] [--repeats 7] [--seconds 5]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import Runner
from benchmarks.common import (
    ONNX_DIR,
    Busy,
    OtherCpu,
    RawRun,
    child_pid,
    cpu_split,
    emit_json,
    load_runners,
    median,
    prometheus_value,
    raw_throughput,
    rep_order,
    synthetic_input,
    thread_cpu,
    window_rate,
)
from loadgen.gateway_process import gateway

WORKLOAD = "resnet18"
VARIANTS = ("raw", "json", "binary")
#: Other processes' CPU (percent of one core) above which the run is flagged as disturbed.
DISTURBED_PCT = 10.0


@dataclass
class GatewayRun:
    """One closed-loop measurement of the gateway."""

    #: Samples/s processed inside the window.
    rate: float
    #: Dispatches the lanes ran per second, and their mean size (the server's metrics).
    dispatches_per_s: float
    mean_dispatch: float
    #: Percent of one core: the gateway's event loop ("main"), each lane, other threads,
    #: and this client process ("client").
    cpu: dict[str, Any] = field(default_factory=dict)
    #: Requests that did not answer 200.
    errors: int = 0

    @property
    def lane_cpu(self) -> float:
        """CPU of all lanes together, percent of one core (NaN without /proc)."""
        lanes = self.cpu.get("lanes")
        return sum(lanes) if lanes else float("nan")


def cpu_ms_per_sample(cpu_pct: float, rate: float) -> float:
    """CPU milliseconds spent per sample, from a CPU share (% of one core) and samples/s."""
    return cpu_pct * 10.0 / rate if rate > 0 else float("nan")


@dataclass(frozen=True)
class LoadShape:
    """What the closed-loop clients send and for how long."""

    #: httpx.post keyword arguments of every request.
    request: dict[str, Any]
    samples: int
    concurrency: int
    warmup_s: float
    seconds: float


def gateway_config(
    lanes: int, threads: int, microbatch: bool, max_dispatch_ms: float | str | None
) -> dict[str, Any]:
    """The gateway under test: ResNet-18 ONNX fp32 on thread lanes.

    `max_dispatch_ms` "default" leaves the gateway's default; None turns the
    dispatch time budget off.
    """
    scheduler: dict[str, Any] = {}
    if not microbatch:
        scheduler["microbatch"] = {"enabled": False}
    if max_dispatch_ms != "default":
        scheduler["max_dispatch_ms"] = max_dispatch_ms
    return {
        "models": [{"name": WORKLOAD, "backends": ["onnx"], "precisions": ["fp32"]}],
        "lanes": {"count": lanes, "kind": "thread", "threads_per_lane": threads},
        "scheduler": scheduler,
        "onnx_dir": str(ONNX_DIR),
    }


def request_kwargs(binary: bool, batch: np.ndarray) -> dict[str, Any]:
    """httpx.post keyword arguments of one request (JSON synthetic, or a binary tensor)."""
    if not binary:
        body = {"model": WORKLOAD, "class": "batch", "batch_size": len(batch), "top_k": 1}
        return {"json": body}
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Shape": ",".join(str(d) for d in batch.shape),
        "X-Model": WORKLOAD,
        "X-Class": "batch",
        "X-Top-K": "1",
    }
    return {"content": batch.astype("<f4").tobytes(), "headers": headers}


@dataclass(frozen=True)
class _Reading:
    """The gateway's counters at one moment."""

    #: CPU seconds per thread of the gateway process.
    threads: dict[int, float]
    #: CPU seconds of this (client) process.
    client: float
    #: Dispatches started so far, and the samples they carried (its /metrics).
    dispatches: float
    samples: float


class Probe:
    """The gateway's thread CPU and dispatch counters, read at both window edges."""

    def __init__(self, url: str, pid: int | None, lanes: int) -> None:
        self.url, self.pid, self.lanes = url, pid, lanes

    async def read(self) -> _Reading:
        """The counters now."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0) as c:
            text = (await c.get("/metrics")).text
        labels = f'model="{WORKLOAD}"'
        return _Reading(
            threads=thread_cpu(self.pid),
            client=time.process_time(),
            dispatches=prometheus_value(text, "mlws_microbatch_size_samples_count", labels),
            samples=prometheus_value(text, "mlws_microbatch_size_samples_sum", labels),
        )


async def closed_loop(url: str, shape: LoadShape, probe: Probe) -> GatewayRun:
    """`shape.concurrency` clients, each sending its next request when the last one answers."""
    spans: list[Busy] = []
    errors = 0
    start = time.perf_counter()
    w0, w1 = start + shape.warmup_s, start + shape.warmup_s + shape.seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < w1:
            try:
                response: httpx.Response | None = await client.post("/infer", **shape.request)
            except httpx.HTTPError:
                response = None
            end = time.perf_counter()
            if response is None or response.status_code != 200:
                errors += 1
                await asyncio.sleep(0.05)  # a failing gateway must not turn this into a spin
                continue
            service_s = response.json()["timing"]["service_ms"] / 1e3
            spans.append(Busy(end - service_s, end, shape.samples))

    async def watch() -> tuple[_Reading, _Reading]:
        await asyncio.sleep(max(0.0, w0 - time.perf_counter()))
        before = await probe.read()
        await asyncio.sleep(max(0.0, w1 - time.perf_counter()))
        return before, await probe.read()

    n = shape.concurrency
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(client_loop(client) for _ in range(n)))
        before, after = await watcher
    cpu = cpu_split(probe.pid, before.threads, after.threads, shape.seconds, probe.lanes)
    cpu["client"] = (after.client - before.client) * 100.0 / shape.seconds
    count = after.dispatches - before.dispatches
    mean = (after.samples - before.samples) / max(count, 1.0)
    return GatewayRun(window_rate(spans, w0, w1), count / shape.seconds, mean, cpu, errors)


def _budget(text: str) -> float | str | None:
    """--max-dispatch-ms: "default", "none" or a number of milliseconds."""
    if text in ("default", "none"):
        return None if text == "none" else text
    return float(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --quick shortens every phase for a ~30 s smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured span of each run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured start of each run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=6, help="requests kept in flight")
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per lane")
    parser.add_argument("--no-binary", action="store_true", help="skip the binary-input variant")
    parser.add_argument(
        "--no-microbatch", action="store_true", help="run the gateway with micro-batching off"
    )
    parser.add_argument(
        "--max-dispatch-ms",
        type=_budget,
        default="default",
        help="scheduler.max_dispatch_ms of the gateway: 'default' (the gateway's), "
        "'none' (no time budget) or milliseconds",
    )
    parser.add_argument("--log", type=Path, help="write the gateway's output to this file")
    parser.add_argument("--quick", action="store_true", help="one short repetition (~30 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds, args.warmup = 1, 4.0, 1.0
    return args


def describe(run: GatewayRun, raw: RawRun) -> str:
    """One line: throughput, ratio, dispatches and CPU of a gateway run."""
    text = (
        f"{run.rate:6.2f} samples/s ({run.rate / raw.rate:.3f})  "
        f"{run.dispatches_per_s:5.1f} dispatches/s of {run.mean_dispatch:4.1f}"
    )
    cpu = run.cpu
    if "main" in cpu:
        lanes = "+".join(f"{x:.0f}" for x in cpu["lanes"])
        text += f"  cpu %: lanes {lanes}, loop {cpu['main']:.1f}, other {cpu['other']:.1f}"
        text += f", client {cpu['client']:.1f}"
        text += f"  {cpu_ms_per_sample(run.lane_cpu, run.rate):.1f} lane-cpu ms/sample"
    if run.errors:
        text += f"  errors {run.errors}"
    return text


@dataclass
class Setup:
    """What every repetition uses: options, raw runners and input, the running gateway."""

    args: argparse.Namespace
    runners: list[Runner]
    batch: np.ndarray
    url: str
    probe: Probe
    others: OtherCpu


@dataclass
class Repetition:
    """One repetition: the raw run, each gateway variant's run, and the disturbance."""

    raw: RawRun
    gateway: dict[str, GatewayRun]
    #: Per variant: CPU other processes used while it ran, percent of one core.
    others_cpu: dict[str, float]


def run_repetition(setup: Setup, rep: int, variants: list[str]) -> Repetition:
    """Each variant once, in `rep_order`; the gateway is idle again after each run."""
    args = setup.args
    out = Repetition(RawRun(float("nan"), float("nan")), {}, {})
    for variant in rep_order(rep, variants):
        setup.others.lap()
        if variant == "raw":
            out.raw = raw_throughput(setup.runners, setup.batch, args.warmup, args.seconds)
        else:
            request = request_kwargs(variant == "binary", setup.batch)
            shape = LoadShape(
                request, len(setup.batch), args.concurrency, args.warmup, args.seconds
            )
            out.gateway[variant] = asyncio.run(closed_loop(setup.url, shape, setup.probe))
        out.others_cpu[variant] = setup.others.lap()
    return out


def print_repetition(rep: int, r: Repetition) -> None:
    """One line per variant of a repetition."""
    raw = r.raw
    print(
        f"rep {rep + 1}: {'raw':>6}: {raw.rate:6.2f} samples/s  cpu % {raw.cpu_pct:.0f}"
        f"  {cpu_ms_per_sample(raw.cpu_pct, raw.rate):.1f} cpu ms/sample"
        f"  [others {r.others_cpu['raw']:.0f} %]",
        flush=True,
    )
    for variant, run in r.gateway.items():
        others = r.others_cpu[variant]
        print(f"       {variant:>6}: {describe(run, raw)}  [others {others:.0f} %]", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Alternate raw and gateway measurements; print ratios per repetition and medians."""
    args = parse_args(argv)
    variants = [v for v in VARIANTS if not (args.no_binary and v == "binary")]
    batch = synthetic_input(WORKLOAD, args.batch_size)
    runners = load_runners(WORKLOAD, args.lanes, args.threads)  # exports first if needed
    config = gateway_config(args.lanes, args.threads, not args.no_microbatch, args.max_dispatch_ms)
    print(
        f"{WORKLOAD} onnx fp32, {args.lanes} lanes × {args.threads} thread(s), batch "
        f"{args.batch_size}, {args.concurrency} clients, {args.seconds:g} s after "
        f"{args.warmup:g} s warm-up; gateway scheduler overrides: {config['scheduler'] or 'none'}"
        "; [others]: CPU of other processes on this machine meanwhile",
        flush=True,
    )
    reps: list[Repetition] = []
    with gateway(config, log=args.log) as url:
        probe = Probe(url, child_pid("-m mlws serve"), args.lanes)
        setup = Setup(args, runners, batch, url, probe, OtherCpu([probe.pid]))
        for rep in range(args.repeats):
            reps.append(run_repetition(setup, rep, variants))
            print_repetition(rep, reps[-1])
    figures = summarise(reps, args)
    line = (
        f"median: raw {figures['raw_samples_per_s']} samples/s, gateway "
        f"{figures['gateway_samples_per_s']} samples/s, efficiency {figures['efficiency']}"
    )
    if "efficiency_binary" in figures:
        line += f"; binary {figures['gateway_binary_samples_per_s']} samples/s, "
        line += f"efficiency {figures['efficiency_binary']}"
    print(line, flush=True)
    if figures["others_cpu_pct_max"] > DISTURBED_PCT:
        quiet = ", ".join(
            f"{variant} {figures[f'efficiency{sfx}_undisturbed']} "
            f"({figures[f'undisturbed_repeats{sfx}']} of {args.repeats})"
            for variant, sfx in (("json", ""), ("binary", "_binary"))
            if f"undisturbed_repeats{sfx}" in figures
        )
        print(
            f"warning: other processes used up to {figures['others_cpu_pct_max']:.0f} % of a "
            f"core while this ran; efficiency over undisturbed repetitions only: {quiet}",
            flush=True,
        )
    emit_json(figures)


def summarise(reps: list[Repetition], args: argparse.Namespace) -> dict[str, Any]:
    """Medians over repetitions of every figure, ratios taken per repetition first."""
    figures: dict[str, Any] = {}
    raws = [r.raw for r in reps]
    for variant in reps[0].gateway:
        suffix = "" if variant == "json" else f"_{variant}"
        done = [r.gateway[variant] for r in reps]
        ratios = [g.rate / raw.rate for g, raw in zip(done, raws, strict=True)]
        figures[f"efficiency{suffix}"] = round(median(ratios), 3)
        figures[f"efficiency{suffix}_per_repeat"] = [round(x, 3) for x in ratios]
        quiet = [
            x
            for x, r in zip(ratios, reps, strict=True)
            if max(r.others_cpu["raw"], r.others_cpu[variant]) < DISTURBED_PCT
        ]
        figures[f"efficiency{suffix}_undisturbed"] = round(median(quiet), 3) if quiet else None
        figures[f"undisturbed_repeats{suffix}"] = len(quiet)
        figures[f"gateway{suffix}_samples_per_s"] = round(median(g.rate for g in done), 2)
        figures[f"dispatches{suffix}_per_s"] = round(median(g.dispatches_per_s for g in done), 1)
        figures[f"mean_dispatch_samples{suffix}"] = round(median(g.mean_dispatch for g in done), 2)
        figures[f"event_loop_cpu_pct{suffix}"] = round(
            median(g.cpu.get("main", float("nan")) for g in done), 1
        )
        figures[f"lane_busy_pct{suffix}"] = round(median(g.lane_cpu / args.lanes for g in done), 1)
        figures[f"gateway{suffix}_cpu_ms_per_sample"] = round(
            median(cpu_ms_per_sample(g.lane_cpu, g.rate) for g in done), 1
        )
        figures[f"errors{suffix}"] = sum(g.errors for g in done)
    figures["raw_samples_per_s"] = round(median(r.rate for r in raws), 2)
    figures["raw_busy_pct"] = round(median(r.cpu_pct / args.lanes for r in raws), 1)
    figures["raw_cpu_ms_per_sample"] = round(
        median(cpu_ms_per_sample(r.cpu_pct, r.rate) for r in raws), 1
    )
    others = [x for r in reps for x in r.others_cpu.values()]
    figures["others_cpu_pct"] = round(median(others), 1)
    figures["others_cpu_pct_max"] = round(max(others), 1)
    figures.update(
        repeats=args.repeats,
        seconds=args.seconds,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        lanes=args.lanes,
        threads_per_lane=args.threads,
        microbatch=not args.no_microbatch,
        max_dispatch_ms=args.max_dispatch_ms,
    )
    return figures


if __name__ == "__main__":
    main()
