"""More models than memory, live: what swapping models on demand costs a mixed stream.

Two gateways run side by side on 127.0.0.1 with the same layout: three models on
ONNX Runtime fp32, `--lanes` (2) thread lanes × 1 intra-op thread, the default
scheduler.

- baseline: no lane budget, every lane holds every model;
- budget: `scheduler.tokens.lane_budget` set to the two largest models' hand-set
  costs, so a lane holds any two of the three and loads the third on demand,
  evicting its least recently used model first.

The models are ResNet-18 (80 MiB in the table), the tiny CNN (10) and ResNet-18's
graph served a second time as a user ONNX file, `resnet18_file` (one MiB per MiB of
weights: 45): two ResNet-18-sized models and a cheap one, so a repetition stays short
on two cores while a swap loads a real 45 MB graph.

Traffic: open-loop Poisson arrivals (fixed seed, the same arrivals for both
gateways) whose model cycles through the three in turn; each is interactive
(`batch_size` 1, `--interactive-slo-ms`) with probability `--interactive-share`,
else batch (`--batch-size` samples, `--batch-slo-ms`). The rate is `--load` of the
capacity the raw ResNet-18 P50 (1 thread, batch 1, measured up front) implies on
the lanes. Latency runs from each request's scheduled send time to its answer, through
the lean client (benchmarks.common.LeanHttp). Each repetition runs baseline and
budget in `rep_order` (reversed on odd repetitions); both gateways stay up for the
whole run and each is measured with the other idle.

Per gateway and repetition: interactive and batch SLO attainment (of all sent: a
refused or shed request is a miss), e2e P50/P99 per class, refusals (429; of them
`predicted_late` from `/metrics`) and shed (503); for the budget gateway the loads,
evictions and mean / P95 load seconds inside the window (deltas of
`mlws_model_loads_total`, `mlws_model_evictions_total`, `mlws_model_load_seconds`;
the P95 is interpolated in the histogram's buckets). Ratios are budget ÷ baseline
per repetition; every figure is the median over repetitions.

Two lanes that each hold two of the three hold all three between them (lanes are
filled in turn, each first with what no lane before it holds); the core sends every
model to a lane that holds it and waits for it rather than load (a load takes longer
than a dispatch), so the budget costs parallelism rather than loads. `--lanes 1` is
the regime where a lane swaps.

    python benchmarks/bench_model_swaps.py [--quick] [--repeats 3] [--seconds 30]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    ONNX_DIR,
    Answer,
    OtherCpu,
    child_pids,
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
from scheduling.simulator import Arrival
from workloads.onnx_file import inspect_onnx_file
from workloads.registry import get_workload

GATEWAYS = ("baseline", "budget")
#: The user ONNX model: ResNet-18's exported graph under another name.
FILE_MODEL = "resnet18_file"
MODELS = ("resnet18", "tiny", FILE_MODEL)
CLASSES = ("interactive", "batch")
#: Other processes' CPU (percent of one core) above which the run is flagged as disturbed.
DISTURBED_PCT = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --quick: one short repetition (about a minute, start-up included)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="traffic per gateway per rep")
    parser.add_argument(
        "--lanes", type=int, default=2, help="1: the lanes cannot hold all three between them"
    )
    parser.add_argument("--load", type=float, default=0.3, help="fraction of the lanes' capacity")
    parser.add_argument("--interactive-share", type=float, default=0.7)
    parser.add_argument("--interactive-slo-ms", type=float, default=250.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batch-slo-ms", type=float, default=2000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, help="write each gateway's output here")
    parser.add_argument("--quick", action="store_true", help="one short repetition (~1 min)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds = 1, 15.0
    return args


def model_costs(file: Path = ONNX_DIR / "resnet18.onnx") -> dict[str, int]:
    """Each model's resident cost (MiB) as the gateway's hand-set table charges it, with
    `file` the user ONNX model's file."""
    costs = {w: get_workload(w).spec.token_base for w in MODELS if w != FILE_MODEL}
    costs[FILE_MODEL] = inspect_onnx_file(file, FILE_MODEL).spec.token_base
    return costs


def lane_budget(costs: dict[str, int]) -> int:
    """MiB that hold any two of the three models but never all three."""
    return sum(sorted(costs.values())[-2:])


def gateway_configs(
    budget: int, lanes: int = 2, file: Path = ONNX_DIR / "resnet18.onnx"
) -> dict[str, dict[str, Any]]:
    """Per gateway, its config: the same but for the budget gateway's `lane_budget`; `file`
    is the user ONNX model's file (ResNet-18's export, in the export directory)."""
    models: list[dict[str, Any]] = [{"name": w, "backends": ["onnx"]} for w in MODELS[:2]]
    models.append({"name": FILE_MODEL, "onnx_file": str(file)})
    base: dict[str, Any] = {
        "models": models,
        "lanes": {"count": lanes, "kind": "thread", "threads_per_lane": 1},
        "onnx_dir": str(file.parent),
        "model_dir": str(file.parent),
    }
    return {
        "baseline": base,
        "budget": {**base, "scheduler": {"tokens": {"lane_budget": budget}}},
    }


def traffic(args: argparse.Namespace, rate: float, seed: int) -> list[Arrival]:
    """Poisson arrivals over `args.seconds`, cycling through MODELS, mixed classes."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * args.seconds * 2) + 10))
    times = times[times < args.seconds]
    interactive = rng.random(len(times)) < args.interactive_share
    out = []
    for i, (t, inter) in enumerate(zip(times.tolist(), interactive.tolist(), strict=True)):
        model = MODELS[i % len(MODELS)]
        if inter:
            out.append(
                Arrival(t, model, "onnx", "fp32", "interactive", 1, args.interactive_slo_ms / 1e3)
            )
        else:
            out.append(
                Arrival(t, model, "onnx", "fp32", "batch", args.batch_size, args.batch_slo_ms / 1e3)
            )
    return out


def arrival_rate(args: argparse.Namespace) -> tuple[float, float]:
    """(raw ResNet-18 P50 ms, requests/s at `args.load`): the mean arrival's work is
    2/3 of a ResNet-sized model's samples (tiny's are free) on `args.lanes` lanes."""
    runner = load_runners("resnet18", 1, 1)[0]  # exports the graph first if needed
    service_ms = p50(raw_latencies_ms(runner, synthetic_input("resnet18", 1), 1.0, 20))
    samples = args.interactive_share + (1 - args.interactive_share) * args.batch_size
    work_s = (2 / 3) * samples * service_ms / 1e3
    return service_ms, args.load * args.lanes / work_s


# ------------------------------------------------------------------ /metrics
def metric_sum(text: str, name: str, match: str = "") -> float:
    """Sum of every series of `name` whose labels contain `match`."""
    total = 0.0
    for labels, value in re.findall(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        if match in labels:
            total += float(value)
    return total


def load_buckets(text: str) -> dict[float, float]:
    """Cumulative counts of `mlws_model_load_seconds` per upper bound, over every model."""
    out: dict[float, float] = {}
    pattern = r'^mlws_model_load_seconds_bucket{[^}]*le="([^"]+)"[^}]*} (\S+)$'
    for le, value in re.findall(pattern, text, re.M):
        out[float(le)] = out.get(float(le), 0.0) + float(value)
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The `q` quantile of the observations between two scrapes, interpolated linearly
    inside its bucket (as Prometheus' histogram_quantile); NaN when there are none."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


@dataclass
class Scrape:
    """The swap and refusal counters of one gateway at one moment."""

    loads: float
    evictions: float
    load_s: float
    buckets: dict[float, float]
    predicted_late: float
    #: Per model: (loads, load seconds).
    per_model: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, url: str) -> Scrape:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        per_model = {
            m: (
                metric_sum(text, "mlws_model_loads_total", f'model="{m}"'),
                metric_sum(text, "mlws_model_load_seconds_sum", f'model="{m}"'),
            )
            for m in MODELS
        }
        return cls(
            per_model=per_model,
            loads=metric_sum(text, "mlws_model_loads_total"),
            evictions=metric_sum(text, "mlws_model_evictions_total"),
            load_s=metric_sum(text, "mlws_model_load_seconds_sum"),
            buckets=load_buckets(text),
            predicted_late=metric_sum(text, "mlws_rejections_total", 'reason="predicted_late"'),
        )


# ------------------------------------------------------------------ one run
@dataclass
class Run:
    """One gateway's answers to one repetition's arrivals."""

    #: Per class: sent, within SLO, refused (429), shed (503), other failures.
    sent: dict[str, int] = field(default_factory=dict)
    met: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    shed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    #: Per class, e2e of the answered (200) requests: P50 and P99, ms.
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    predicted_late: float = 0.0
    loads: float = 0.0
    evictions: float = 0.0
    load_mean_s: float = float("nan")
    load_p95_s: float = float("nan")
    #: Per model loaded in the window, its mean load seconds.
    load_mean_by_model: dict[str, float] = field(default_factory=dict)
    lanes: list[list[str]] = field(default_factory=list)
    others_cpu: float = float("nan")

    def attainment(self, job_class: str) -> float:
        sent = self.sent.get(job_class, 0)
        return self.met.get(job_class, 0) / sent if sent else float("nan")


def tally(arrivals: list[Arrival], answers: list[Answer]) -> Run:
    """Per class counts and latency percentiles of one run's answers."""
    run = Run()
    for job_class in CLASSES:
        mine = [a for a in answers if arrivals[a.index].job_class == job_class]
        ok = [a.e2e_ms for a in mine if a.status == 200]
        slo_ms = {a.index: arrivals[a.index].slo * 1e3 for a in mine}
        run.sent[job_class] = len(mine)
        run.met[job_class] = sum(1 for a in mine if a.status == 200 and a.e2e_ms <= slo_ms[a.index])
        run.refused[job_class] = sum(1 for a in mine if a.status == 429)
        run.shed[job_class] = sum(1 for a in mine if a.status == 503)
        run.failed[job_class] = len(mine) - len(ok) - run.refused[job_class] - run.shed[job_class]
        run.p50_ms[job_class] = float(np.percentile(ok, 50)) if ok else float("nan")
        run.p99_ms[job_class] = float(np.percentile(ok, 99)) if ok else float("nan")
    return run


def measure(url: str, arrivals: list[Arrival], others: OtherCpu) -> Run:
    """Send `arrivals` to the gateway at `url`; the Run with its /metrics deltas."""
    before = Scrape.of(url)
    others.lap()
    answers = open_loop(url, arrivals, ("lean",))
    others_cpu = others.lap()
    after = Scrape.of(url)
    run = tally(arrivals, answers)
    run.others_cpu = others_cpu
    run.predicted_late = after.predicted_late - before.predicted_late
    run.loads = after.loads - before.loads
    run.evictions = after.evictions - before.evictions
    if run.loads:
        run.load_mean_s = (after.load_s - before.load_s) / run.loads
        run.load_p95_s = bucket_quantile(before.buckets, after.buckets, 0.95)
    for m, (loads, seconds) in after.per_model.items():
        n = loads - before.per_model[m][0]
        if n:
            run.load_mean_by_model[m] = (seconds - before.per_model[m][1]) / n
    lanes = httpx.get(f"{url}/v1/lanes", timeout=30).json()["lanes"]
    run.lanes = [[m.split("/")[0] for m in lane["models"]] for lane in lanes]
    return run


def warm(url: str, rounds: int = 2) -> None:
    """Unmeasured requests cycling through the models (batch class, a generous SLO, so
    nothing is refused): first-request costs stay out of the figures, and the budget
    gateway measures a load or two before admission counts them."""
    with httpx.Client(base_url=url, timeout=120.0) as client:
        for _ in range(rounds):
            for model in MODELS:
                body = {"model": model, "class": "batch", "slo_ms": 60000, "batch_size": 1}
                client.post("/infer", json=body).raise_for_status()


@contextlib.contextmanager
def gateways(
    args: argparse.Namespace, budget: int
) -> Iterator[tuple[dict[str, str], list[int | None]]]:
    """Both gateways, started one after the other and warmed: URLs, serve pids."""
    configs = gateway_configs(budget, args.lanes)
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for name in GATEWAYS:
            log = args.log_dir / f"{name}.log" if args.log_dir else None
            urls[name] = stack.enter_context(gateway(configs[name], log=log))
            warm(urls[name])
        yield urls, list(child_pids("-m mlws serve"))


# ------------------------------------------------------------------ output
def describe(rep: int, name: str, run: Run) -> str:
    """One line per gateway and repetition."""
    parts = [f"rep {rep + 1} {name:>8}:"]
    for c in CLASSES:
        parts.append(
            f"{c} {run.attainment(c):6.1%} of {run.sent[c]:3d} (P50 {run.p50_ms[c]:6.1f}, "
            f"P99 {run.p99_ms[c]:6.1f} ms; refused {run.refused[c]}, shed {run.shed[c]}"
            + (f", failed {run.failed[c]}" if run.failed[c] else "")
            + ")"
        )
    parts.append(f"predicted_late {run.predicted_late:.0f}")
    if name == "budget":
        parts.append(f"loads {run.loads:.0f}, evictions {run.evictions:.0f}")
        if run.loads:
            by_model = ", ".join(f"{m} {v:.3f} s" for m, v in run.load_mean_by_model.items())
            parts[-1] += f", load mean {run.load_mean_s:.3f} s ({by_model}), P95 "
            parts[-1] += f"{run.load_p95_s:.3f} s"
        parts[-1] += f"; lanes hold {run.lanes}"
    return "  ".join(parts) + f"  [others {run.others_cpu:.0f} %]"


def gateway_figures(runs: list[Run]) -> dict[str, float]:
    """Medians over repetitions of one gateway's figures."""
    out: dict[str, float] = {}
    for c in CLASSES:
        out[f"{c}_attainment"] = median(r.attainment(c) for r in runs)
        out[f"{c}_p50_ms"] = median(r.p50_ms[c] for r in runs)
        out[f"{c}_p99_ms"] = median(r.p99_ms[c] for r in runs)
        out[f"{c}_refused"] = median(r.refused[c] for r in runs)
        out[f"{c}_shed"] = median(r.shed[c] for r in runs)
    out["predicted_late"] = median(r.predicted_late for r in runs)
    out["failed"] = sum(sum(r.failed.values()) for r in runs)
    out["loads"] = median(r.loads for r in runs)
    out["evictions"] = median(r.evictions for r in runs)
    out["load_mean_s"] = median(r.load_mean_s for r in runs if r.loads)
    out["load_p95_s"] = median(r.load_p95_s for r in runs if r.loads)
    for m in MODELS:
        out[f"load_mean_s_{m}"] = median(
            r.load_mean_by_model[m] for r in runs if m in r.load_mean_by_model
        )
    return out


def ratio(a: float, b: float) -> float:
    """a ÷ b, NaN when b is 0 or either is NaN."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else float("nan")


def summarise(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Every figure: per gateway (prefixed), and budget ÷ baseline per repetition."""
    figures: dict[str, Any] = {}
    for name in GATEWAYS:
        mine = gateway_figures(runs[name])
        figures.update({f"{name}_{k}": _round(v) for k, v in mine.items()})
    pairs = list(zip(runs["baseline"], runs["budget"], strict=True))
    for c in CLASSES:
        figures[f"{c}_attainment_ratio"] = _round(
            median(ratio(b.attainment(c), a.attainment(c)) for a, b in pairs)
        )
        for q in ("p50", "p99"):
            figures[f"{c}_{q}_ratio"] = _round(
                median(ratio(getattr(b, f"{q}_ms")[c], getattr(a, f"{q}_ms")[c]) for a, b in pairs)
            )
    figures["others_cpu_pct_max"] = _round(
        max(r.others_cpu for name in GATEWAYS for r in runs[name])
    )
    return figures


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def print_table(figures: dict[str, Any]) -> None:
    """Medians side by side: baseline, budget, and their ratio."""
    print(f"\n{'median over repetitions':<28} {'baseline':>10} {'budget':>10} {'ratio':>8}")
    for c in CLASSES:
        for key, label in (
            ("attainment", "SLO attainment"),
            ("p50_ms", "P50 ms"),
            ("p99_ms", "P99 ms"),
        ):
            ratio_key = f"{c}_{key.removesuffix('_ms')}_ratio"
            print(
                f"{c + ' ' + label:<28} {_fmt(figures[f'baseline_{c}_{key}']):>10} "
                f"{_fmt(figures[f'budget_{c}_{key}']):>10} {_fmt(figures[ratio_key]):>8}"
            )
        cells = [
            f"{_fmt(figures[f'{g}_{c}_refused'])} / {_fmt(figures[f'{g}_{c}_shed'])}"
            for g in GATEWAYS
        ]
        print(f"{c + ' refused / shed':<28} {cells[0]:>10} {cells[1]:>10}")
    by_model = ", ".join(f"{m} {_fmt(figures['budget_load_mean_s_' + m])}" for m in MODELS)
    print(
        f"budget gateway swaps: {_fmt(figures['budget_loads'])} loads, "
        f"{_fmt(figures['budget_evictions'])} evictions per run; load mean "
        f"{_fmt(figures['budget_load_mean_s'])} s, P95 {_fmt(figures['budget_load_p95_s'])} s "
        f"(mean per model: {by_model})",
        flush=True,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def main(argv: list[str] | None = None) -> None:
    """Start both gateways, send the same arrivals to each in turn; print the medians."""
    args = parse_args(argv)
    service_ms, rate = arrival_rate(args)
    costs = model_costs()
    budget = lane_budget(costs)
    print(
        f"models {', '.join(f'{m} {costs[m]} MiB' for m in MODELS)} on onnx fp32, {args.lanes} "
        f"thread lanes × 1 thread; budget gateway: lane_budget {budget} MiB (two of three). "
        f"{rate:.1f} requests/s ({args.load:.0%} load; raw ResNet-18 P50 {service_ms:.1f} ms) "
        f"for {args.seconds:g} s, {args.interactive_share:.0%} interactive (batch 1, SLO "
        f"{args.interactive_slo_ms:g} ms), else batch {args.batch_size} (SLO "
        f"{args.batch_slo_ms:g} ms); {args.repeats} repetitions",
        flush=True,
    )
    runs: dict[str, list[Run]] = {name: [] for name in GATEWAYS}
    with gateways(args, budget) as (urls, pids):
        others = OtherCpu(pids)
        for rep in range(args.repeats):
            arrivals = traffic(args, rate, args.seed + rep)
            for name in rep_order(rep, GATEWAYS):
                runs[name].append(measure(urls[name], arrivals, others))
                print(describe(rep, name, runs[name][-1]), flush=True)
        settled = Scrape.of(urls["budget"])  # the warm-up's loads included
    figures = summarise(runs)
    figures["budget_loads_since_start"] = settled.loads
    print_table(figures)
    print(f"budget gateway since it started (warm-up included): {settled.loads:.0f} loads")
    if (figures["others_cpu_pct_max"] or 0.0) > DISTURBED_PCT:
        print(
            f"warning: other processes used up to {figures['others_cpu_pct_max']:.0f} % of a "
            "core while this ran: the figures are disturbed",
            flush=True,
        )
    figures.update(
        models=list(MODELS),
        lane_budget_mib=budget,
        rate_per_s=round(rate, 2),
        raw_resnet18_p50_ms=round(service_ms, 2),
        repeats=args.repeats,
        seconds=args.seconds,
        load=args.load,
        lanes=args.lanes,
        seed=args.seed,
    )
    emit_json(figures)


if __name__ == "__main__":
    main()
