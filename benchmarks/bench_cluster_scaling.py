"""How far one scheduler goes: SLO attainment and the core's own cost as a cluster grows.

The simulator runs 1, 4, 16 and 64 nodes of 2 lanes under ONE scheduler, the
offered load scaled with the nodes (`--load` 0.7 of the cluster's unbatched capacity,
loadgen/arrivals.py). Each node has the default gateway's lane groups cut to one
lane each: an interactive lane (normal priority, 50 ms dispatch budget) and a batch
lane (low priority, 250 ms), both with 2 intra-op threads: on a 2-core node each
may use the whole node, and the interactive one pauses the batch one. priority_slo,
interactive admission and shedding (margin 5 ms), batch micro-batching (10 ms, 64
samples), 1000 tokens per node, SLOs 100 ms / 1 s, ResNet-18, 30 % interactive
single images, batch jobs of 1-8 images, every dispatch `--network-ms` (1) longer
for the hop to its node and back.

Two node speeds. `cpu`: a 2-core CPU node, ResNet-18 on ONNX Runtime timed by
configs/profiles/cpu.csv, the lanes sharing the node's cores by priority (about 7
jobs/s of this mix per node). `fast`: an accelerator-class node, 1 ms + 0.5 ms per
image (an assumed figure, not a measurement), each lane at its own speed (about
380 jobs/s per node).

The scheduler's cost is wall time inside Scheduler.submit / poll / complete /
next_wakeup / take_shed (a timing subclass built here, about 0.1 µs of timer per
call included), per decision (an admission, a dispatch started or one completed)
and per request (its whole lifecycle). One Python loop's scheduling sustains
1e6 / (µs per request) requests/s; `core` is the share of one core it needs at the
offered rate, `with front end` adds the gateway's own per-request event-loop work
(FRONT_END_MS, HTTP and encoding, measured live). Where `core` reaches
`--partition-at` (0.5) the same nodes are also run as k independent schedulers
(one per model group, each on a core of its own, 1/k of the nodes and of the
traffic: k runs on different seeds), enough for each to stay under a quarter core.

    python benchmarks/bench_cluster_scaling.py [--nodes 1,4,16,64] [--jobs N] [--quick]

About 2 minutes (`--quick`: 20 s). Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.arrivals import arrival_rate, poisson_arrivals
from loadgen.config import ExperimentConfig, parse_experiment_config
from loadgen.experiment import build_service_model
from scheduling.job import Dispatch, Job
from scheduling.scheduler import Scheduler
from scheduling.simulator import SimResult, simulate
from workloads.registry import get_workload

ROOT = Path(__file__).resolve().parents[1]
#: The gateway's own event-loop CPU per request outside the core (HTTP, decoding,
#: answering), measured on the 2-core development VM (benchmarks/bench_slo_promise.py).
FRONT_END_MS = 1.4
#: Per node speed: where its service times come from, and whether its lanes share cores.
SPEEDS: dict[str, dict[str, Any]] = {
    "cpu": {"profile": str(ROOT / "configs/profiles/cpu.csv"), "cores": 2},
    "fast": {"fixed": {"resnet18": {"base_ms": 1.0, "per_sample_ms": 0.5}}},
}


def experiment(speed: str, nodes: int, network_ms: float, load: float) -> ExperimentConfig:
    """The study's config for one node speed and cluster size."""
    interactive = {"threads": 2, "max_dispatch_ms": 50}
    batch = {"threads": 2, "priority": "low", "max_dispatch_ms": 250}
    groups = [
        {"name": "interactive", "count": 1, "classes": ["interactive"], **interactive},
        {"name": "batch", "count": 1, "classes": ["batch"], **batch},
    ]
    return parse_experiment_config(
        {
            "name": f"scaling-{speed}-{nodes}",
            "duration_s": 1,
            "load": load,
            "interactive_ratio": 0.3,
            "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"min": 1, "max": 8}},
            "workload_mix": {"resnet18": 1},
            "backends": {"onnx": 1},
            "slo_ms": {"interactive": 100, "batch": 1000},
            "scheduler": {
                "policy": "priority_slo",
                "lane_groups": groups,
                "admission": {
                    "interactive": {"refuse_late": True, "shed_late": True, "margin_ms": 5},
                    "batch": {"refuse_late": False, "shed_late": False},
                },
                "tokens": {"capacity": 1000},
                "microbatch": {
                    "enabled": True,
                    "window_ms": 10,
                    "max_batch": 64,
                    "classes": ["batch"],
                },
                "max_dispatch_samples": 32,
            },
            "cluster": {"nodes": nodes, "network_ms": network_ms},
            "jitter": 0.1,
            "seed": 0,
            "service_time": SPEEDS[speed],
        }
    )


def timed_scheduler() -> tuple[type[Scheduler], list[float]]:
    """A Scheduler subclass adding the wall time of its driver's calls to `spent[0]`."""
    spent = [0.0]
    clock = time.perf_counter

    class Timed(Scheduler):
        def submit(self, job: Job, now: float) -> None:
            t = clock()
            try:
                super().submit(job, now)
            finally:
                spent[0] += clock() - t

        def poll(self, now: float) -> list[Dispatch]:
            t = clock()
            out = super().poll(now)
            spent[0] += clock() - t
            return out

        def complete(self, dispatch: Dispatch, now: float) -> list[Job]:
            t = clock()
            out = super().complete(dispatch, now)
            spent[0] += clock() - t
            return out

        def next_wakeup(self, now: float) -> float | None:
            t = clock()
            out = super().next_wakeup(now)
            spent[0] += clock() - t
            return out

        def take_shed(self) -> list[Job]:
            t = clock()
            out = super().take_shed()
            spent[0] += clock() - t
            return out

    return Timed, spent


@dataclass
class Row:
    """One simulated cluster (or the sum of its partitions)."""

    speed: str
    nodes: int
    partitions: int
    rate: float
    jobs: int
    interactive: float
    batch: float
    us_decision: float
    us_request: float
    wall_s: float

    @property
    def loop_rate(self) -> float:
        """Requests/s one loop's scheduling sustains (each partition's loop, for several)."""
        return 1e6 / self.us_request * self.partitions

    @property
    def core(self) -> float:
        """Share of one core each loop's scheduling needs at the offered rate."""
        return self.rate / self.partitions * self.us_request / 1e6

    @property
    def gateway_core(self) -> float:
        """The same with the gateway's own per-request work in that loop (FRONT_END_MS)."""
        return self.rate / self.partitions * (self.us_request + FRONT_END_MS * 1e3) / 1e6


def run_one(config: ExperimentConfig, duration_s: float, seed: int) -> tuple[SimResult, float]:
    """Simulate `config` for `duration_s` on a timing scheduler; (result, seconds inside it)."""
    model = build_service_model(config)
    rate = arrival_rate(config, model)
    arrivals = poisson_arrivals(config, rate, duration_s, seed)
    bases = {w: get_workload(w).spec.token_base for w in config.workload_mix}
    cls, spent = timed_scheduler()
    result = simulate(
        config.scheduler,
        arrivals,
        model,
        bases,
        jitter=config.jitter,
        seed=seed,
        cores=config.cores(),
        topology=config.cluster.topology(),
        scheduler_class=cls,
    )
    return result, spent[0]


def measure(speed: str, nodes: int, partitions: int, args: argparse.Namespace) -> Row:
    """`nodes` nodes as `partitions` independent schedulers of nodes/partitions each."""
    part = experiment(speed, nodes // partitions, args.network_ms, args.load)
    rate = arrival_rate(part, build_service_model(part))
    duration = min(args.max_duration_s, args.jobs / (rate * partitions))
    started = time.perf_counter()
    results, spent = [], 0.0
    for k in range(partitions):
        result, inside = run_one(part, duration, seed=k)
        results.append(result)
        spent += inside
    wall = time.perf_counter() - started
    jobs = [j for r in results for j in r.jobs]
    merged = SimResult(jobs=jobs, dispatches=sum(r.dispatches for r in results), sim_time=0.0)
    decisions = len(jobs) + 2 * merged.dispatches
    return Row(
        speed=speed,
        nodes=nodes,
        partitions=partitions,
        rate=rate * partitions,
        jobs=len(jobs),
        interactive=merged.slo_attainment("interactive"),
        batch=merged.slo_attainment("batch"),
        us_decision=spent / decisions * 1e6,
        us_request=spent / len(jobs) * 1e6,
        wall_s=wall,
    )


def show(row: Row) -> None:
    layout = f"{row.nodes}" + (f" as {row.partitions} loops" if row.partitions > 1 else "")
    print(
        f"| {row.speed} | {layout} | {row.rate:,.0f} | {row.jobs:,} | {row.interactive:.3f} | "
        f"{row.batch:.3f} | {row.us_decision:.1f} | {row.us_request:.1f} | "
        f"{row.loop_rate:,.0f} | {row.core:.3f} | {row.gateway_core:.2f} | {row.wall_s:.1f} |",
        flush=True,
    )


HEADER = (
    "| speed | nodes | offered jobs/s | jobs | interactive SLO | batch SLO | µs/decision | "
    "µs/request | loop sustains req/s | core at offered | with front end | wall s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    """Print the scaling table (and partitioned rows where one loop runs hot); last line JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,4,16,64", help="cluster sizes, comma-separated")
    parser.add_argument("--speeds", default="cpu,fast", help=f"of: {', '.join(SPEEDS)}")
    parser.add_argument("--jobs", type=int, default=60_000, help="arrivals per row (about)")
    parser.add_argument("--max-duration-s", type=float, default=1800.0)
    parser.add_argument("--network-ms", type=float, default=1.0)
    parser.add_argument("--load", type=float, default=0.7, help="of the unbatched capacity")
    parser.add_argument(
        "--partition-at",
        type=float,
        default=0.5,
        help="also run a cluster as partitions when one loop's scheduling needs this "
        "share of a core",
    )
    parser.add_argument("--quick", action="store_true", help="--jobs 5000, sizes 1,4,16")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.nodes = 5000, "1,4,16"
    print(HEADER)
    rows: list[Row] = []
    for speed in args.speeds.split(","):
        for nodes in (int(n) for n in args.nodes.split(",")):
            rows.append(measure(speed, nodes, 1, args))
            show(rows[-1])
            if rows[-1].core >= args.partition_at and nodes > 1:
                # Enough loops for each to stay under a quarter of a core, a power of two
                # dividing the nodes: one scheduler per model group, each on its own core.
                k = min(nodes, 2 ** math.ceil(math.log2(4 * rows[-1].core)))
                rows.append(measure(speed, nodes, k, args))
                show(rows[-1])
    figures: dict[str, Any] = {
        "load": args.load,
        "network_ms": args.network_ms,
        "front_end_ms": FRONT_END_MS,
        "rows": [_figures(r) for r in rows],
    }
    print(json.dumps(figures))


def _figures(row: Row) -> dict[str, Any]:
    return {
        "speed": row.speed,
        "nodes": row.nodes,
        "partitions": row.partitions,
        "offered_per_s": round(row.rate, 1),
        "jobs": row.jobs,
        "interactive_attainment": round(row.interactive, 4),
        "batch_attainment": round(row.batch, 4),
        "us_per_decision": round(row.us_decision, 2),
        "us_per_request": round(row.us_request, 2),
        "loop_sustains_per_s": round(row.loop_rate),
        "core_at_offered": round(row.core, 3),
        "core_with_front_end": round(row.gateway_core, 3),
    }


if __name__ == "__main__":
    main()
