"""Gateway overhead: end-to-end P50 at 10 % load minus the raw backend's service P50.

One gateway serves ResNet-18 and the tiny CNN on ONNX Runtime fp32, 2 thread lanes
× 1 intra-op thread. Per workload and repetition, alternating (order reversed on
odd repetitions):

- raw: the model's own runner (1 thread) on a batch of 1 in a loop: P50 run time;
- gateway: interactive batch_size=1 requests, open-loop Poisson (fixed seed) at
  `--load` of the capacity the raw P50 implies on 2 lanes, capped at `--max-rate`
  requests/s (the tiny model's 10 % would be thousands of requests/s, which would
  measure the gateway saturated instead of its cost per request). Latency is the
  client's, from the scheduled send time, as `loadgen.client.run_load` measures it.

Requests alternate between two clients sharing that one arrival stream: httpx
(the project's client, as loadgen uses it) and a lean HTTP/1.1 client on asyncio
streams (`benchmarks.common.LeanHttp`); their difference is what the client
library costs, the lean figure is what the gateway costs.

overhead = e2e P50 − raw P50, the median over repetitions. To attribute it:

- idle machine: the raw runner called at the request pace (sleeping the same
  Poisson gaps between runs) is slower than in a tight loop (colder caches, idle
  cores waking up), with no gateway involved: paced P50 − raw P50;
- lane hop: the gateway's service P50 (dispatch to completion, on its event
  loop's clock) − the paced P50: the hop to the lane thread and back;
- queue: the gateway's queue P50 (the handler's start to the dispatch: body
  read, parsing, submit, the dispatcher's wake-up);
- outside: the P50 of client e2e − the gateway's own e2e per request: HTTP,
  routing, response encoding and the client, outside the gateway's clock; of it,
  "client late" is how late the client's asyncio timer sent the request.

    python benchmarks/bench_gateway_overhead.py [--quick] [--requests 300] [--repeats 3]

Ends with one JSON line of the figures: resnet18 through httpx unprefixed
(`overhead_ms`, ...), the others prefixed (`lean_overhead_ms`, `tiny_overhead_ms`,
`tiny_lean_overhead_ms`, ...).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import Runner
from benchmarks.common import (
    CLIENTS,
    ONNX_DIR,
    Answer,
    OtherCpu,
    child_pid,
    emit_json,
    load_runners,
    median,
    open_loop,
    p50,
    raw_latencies_ms,
    rep_order,
    synthetic_input,
)
from loadgen.gateway_process import gateway
from scheduling.job import DEFAULT_SLO_S
from scheduling.simulator import Arrival

WORKLOADS = ("resnet18", "tiny")
LANES = 2
#: Other processes' CPU (percent of one core) above which the run is flagged as disturbed.
DISTURBED_PCT = 10.0


@dataclass
class Row:
    """One repetition of one workload through one client: P50s in ms."""

    raw_p50: float
    #: The raw runner called at the request pace (idle between runs), P50.
    raw_paced_p50: float
    e2e_p50: float
    queue_p50: float
    service_p50: float
    server_e2e_p50: float
    #: P50 of (client e2e − gateway e2e) per request: HTTP, parsing, encoding, client.
    outside_p50: float
    #: P50 of how late the client sent (asyncio timer wake-up), part of `outside_p50`.
    late_p50: float
    ok: int
    failed: int
    #: CPU other processes used meanwhile, percent of one core (the larger of the two runs).
    others_cpu: float = float("nan")

    @property
    def overhead(self) -> float:
        """e2e P50 − raw service P50."""
        return self.e2e_p50 - self.raw_p50


def gateway_config(workloads: list[str]) -> dict[str, Any]:
    """The gateway under test: every workload on ONNX fp32, 2 thread lanes × 1 thread."""
    return {
        "models": [{"name": w, "backends": ["onnx"], "precisions": ["fp32"]} for w in workloads],
        "lanes": {"count": LANES, "kind": "thread", "threads_per_lane": 1},
        "onnx_dir": str(ONNX_DIR),
    }


def poisson(workload: str, rate: float, n: int, seed: int) -> list[Arrival]:
    """`n` interactive single-sample arrivals of `workload` at `rate` per second."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    slo = DEFAULT_SLO_S["interactive"]
    return [Arrival(t, workload, "onnx", "fp32", "interactive", 1, slo) for t in times.tolist()]


def summarise_answers(
    raw_ms: dict[str, list[float]], answers: list[Answer], others_cpu: float
) -> Row:
    """One Row from the raw run times and one client's answers (only 200s count)."""
    ok = [a for a in answers if a.status == 200 and a.server_e2e_ms is not None]
    return Row(
        raw_p50=p50(raw_ms["raw"]),
        raw_paced_p50=p50(raw_ms["paced"]),
        e2e_p50=p50(a.e2e_ms for a in ok),
        queue_p50=p50(a.queue_ms for a in ok if a.queue_ms is not None),
        service_p50=p50(a.service_ms for a in ok if a.service_ms is not None),
        server_e2e_p50=p50(a.server_e2e_ms for a in ok if a.server_e2e_ms is not None),
        outside_p50=p50(a.e2e_ms - a.server_e2e_ms for a in ok if a.server_e2e_ms is not None),
        late_p50=p50(a.late_ms for a in ok),
        ok=len(ok),
        failed=len(answers) - len(ok),
        others_cpu=others_cpu,
    )


def warm_gateway(url: str, workloads: list[str], n: int = 5) -> None:
    """A few unmeasured requests per model: first-request costs stay out of the figures."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for workload in workloads:
            for _ in range(n):
                body = {"model": workload, "class": "interactive", "batch_size": 1, "top_k": 1}
                client.post("/infer", json=body).raise_for_status()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --quick shortens every phase for a ~30 s smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=300, help="per workload over all repeats, both clients"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.10, help="fraction of 2 lanes' capacity")
    parser.add_argument("--max-rate", type=float, default=20.0, help="requests/s cap")
    parser.add_argument("--raw-seconds", type=float, default=2.0, help="raw loop per repeat")
    parser.add_argument(
        "--paced-runs", type=int, default=20, help="raw runs at the request pace per repeat"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, help="write the gateway's output to this file")
    parser.add_argument("--quick", action="store_true", help="one short repetition (~30 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.repeats, args.raw_seconds, args.paced_runs = 40, 1, 0.5, 8
    return args


def key_prefix(workload: str, client: str, first: str) -> str:
    """JSON key prefix: none for the first workload through httpx, else workload_/lean_."""
    return ("" if workload == first else f"{workload}_") + ("" if client == "httpx" else "lean_")


def describe(workload: str, client: str, rep: int, rate: float, row: Row) -> str:
    """One line per workload, client and repetition: the overhead and its parts (P50s)."""
    idle, hop = row.raw_paced_p50 - row.raw_p50, row.service_p50 - row.raw_paced_p50
    text = (
        f"rep {rep + 1} {workload:>8} {client:>5} @ {rate:4.1f}/s: e2e {row.e2e_p50:6.2f} = raw "
        f"{row.raw_p50:6.2f} + overhead {row.overhead:5.2f} ms ≈ idle machine {idle:4.2f}"
        f" + lane hop {hop:5.2f} + queue {row.queue_p50:4.2f} + outside {row.outside_p50:5.2f}"
        f" (client late {row.late_p50:4.2f})"
    )
    if row.failed:
        text += f"  ({row.failed} failed)"
    return text + f"  [others {row.others_cpu:.0f} %]"


def figures_of(rows: list[Row]) -> dict[str, Any]:
    """Medians over repetitions of one workload through one client."""
    fields = {
        "overhead_ms": [r.overhead for r in rows],
        "raw_service_p50_ms": [r.raw_p50 for r in rows],
        "raw_paced_p50_ms": [r.raw_paced_p50 for r in rows],
        "e2e_p50_ms": [r.e2e_p50 for r in rows],
        "server_queue_p50_ms": [r.queue_p50 for r in rows],
        "server_service_p50_ms": [r.service_p50 for r in rows],
        "server_e2e_p50_ms": [r.server_e2e_p50 for r in rows],
        "outside_server_p50_ms": [r.outside_p50 for r in rows],
        "client_send_late_p50_ms": [r.late_p50 for r in rows],
        "others_cpu_pct": [r.others_cpu for r in rows],
    }
    out: dict[str, Any] = {k: round(median(v), 3) for k, v in fields.items()}
    out["overhead_per_repeat_ms"] = [round(r.overhead, 3) for r in rows]
    out["requests"] = sum(r.ok + r.failed for r in rows)
    out["failed"] = sum(r.failed for r in rows)
    return out


def raw_runs(
    runner: Runner, batch: np.ndarray, args: argparse.Namespace, arrivals: list[Arrival]
) -> dict[str, list[float]]:
    """Run times (ms): "raw" in a tight loop, "paced" with the first gaps of `arrivals`."""
    times = [a.time for a in arrivals[: args.paced_runs + 1]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return {
        "raw": raw_latencies_ms(runner, batch, args.raw_seconds, 20),
        "paced": raw_latencies_ms(runner, batch, 0.0, 0, gaps_s=gaps),
    }


#: Rows of every repetition per (workload, client).
Rows = dict[tuple[str, str], list[Row]]


def measure(args: argparse.Namespace, workloads: list[str]) -> tuple[dict[str, float], Rows]:
    """Rates per workload, and Rows per (workload, client) over every repetition."""
    per_repeat = max(1, args.requests // args.repeats)
    runners: dict[str, Runner] = {w: load_runners(w, 1, 1)[0] for w in workloads}
    batches = {w: synthetic_input(w, 1) for w in workloads}
    rates = {}
    for w in workloads:  # the load follows the raw service time, measured once up front
        service_s = p50(raw_latencies_ms(runners[w], batches[w], 1.0, 20)) / 1e3
        rates[w] = min(args.load * LANES / service_s, args.max_rate)
    print(
        f"onnx fp32, {LANES} thread lanes × 1 thread, interactive batch 1, {per_repeat} requests"
        f" × {args.repeats} repeats per workload ({', '.join(CLIENTS)} alternating) at "
        f"{args.load:.0%} load (≤ {args.max_rate:g}/s); [others]: CPU of other processes",
        flush=True,
    )
    rows: Rows = {(w, c): [] for w in workloads for c in CLIENTS}
    with gateway(gateway_config(workloads), log=args.log) as url:
        warm_gateway(url, workloads)
        others = OtherCpu([child_pid("-m mlws serve")])
        for rep in range(args.repeats):
            for w in workloads:
                raw_ms: dict[str, list[float]] = {}
                answers: list[Answer] = []
                disturbed = []
                arrivals = poisson(w, rates[w], per_repeat, args.seed + rep)
                for what in rep_order(rep, ("raw", "gateway")):
                    others.lap()
                    if what == "raw":
                        raw_ms = raw_runs(runners[w], batches[w], args, arrivals)
                    else:
                        answers = open_loop(url, arrivals, CLIENTS)
                    disturbed.append(others.lap())
                for client in CLIENTS:
                    mine = [a for a in answers if a.client == client]
                    row = summarise_answers(raw_ms, mine, max(disturbed))
                    rows[w, client].append(row)
                    print(describe(w, client, rep, rates[w], row), flush=True)
    return rates, rows


def main(argv: list[str] | None = None) -> None:
    """Alternate raw and gateway measurements per workload; print the split and medians."""
    args = parse_args(argv)
    workloads = args.workloads.split(",")
    rates, rows = measure(args, workloads)
    figures: dict[str, Any] = {}
    for (w, client), done in rows.items():
        prefix = key_prefix(w, client, workloads[0])
        mine = figures_of(done)
        figures.update({prefix + k: v for k, v in mine.items()})
        print(
            f"median {w} {client}: overhead {mine['overhead_ms']:.2f} ms (e2e "
            f"{mine['e2e_p50_ms']:.2f} − raw {mine['raw_service_p50_ms']:.2f}; raw at the request "
            f"pace {mine['raw_paced_p50_ms']:.2f}); gateway queue "
            f"{mine['server_queue_p50_ms']:.2f}, service {mine['server_service_p50_ms']:.2f}, "
            f"outside its clock {mine['outside_server_p50_ms']:.2f} (client late "
            f"{mine['client_send_late_p50_ms']:.2f})",
            flush=True,
        )
    for w in workloads:
        figures[key_prefix(w, "httpx", workloads[0]) + "rate_per_s"] = round(rates[w], 2)
    figures.update(workloads=workloads, repeats=args.repeats, load=args.load, seed=args.seed)
    disturbed = max(median(r.others_cpu for r in done) for done in rows.values())
    if disturbed > DISTURBED_PCT:
        print(
            f"warning: other processes used up to {disturbed:.0f} % of a core (median per "
            "workload) while this ran: the figures are disturbed",
            flush=True,
        )
    emit_json(figures)


if __name__ == "__main__":
    main()
