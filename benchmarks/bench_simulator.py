"""How fast the simulator runs, per policy: jobs simulated per wall-clock second.

Workload: Poisson arrivals at 70 % of two lanes' capacity (counted without
batching), 30 % interactive (1 sample, SLO 100 ms), 70 % batch (1-16 samples,
SLO 1 s), one ResNet-18-like model at 8 ms + 3.5 ms/sample. Arrivals are built
before the clock starts; only `simulate` is timed.

    python benchmarks/bench_simulator.py [--jobs N] [--seed S]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduling.config import SchedulerConfig
from scheduling.job import DEFAULT_SLO_S
from scheduling.service_time import FixedServiceTime
from scheduling.simulator import Arrival, simulate
from workloads.specs import RESNET18

FIXED_MS, PER_SAMPLE_MS = 8.0, 3.5
LANES = 2
LOAD = 0.70
INTERACTIVE_SHARE = 0.30
BATCH_SAMPLES = (1, 16)
POLICIES = ("fifo", "priority_slo", "dynamic")


def make_arrivals(n: int, seed: int) -> list[Arrival]:
    """`n` Poisson arrivals at LOAD of LANES lanes' unbatched capacity."""
    rng = np.random.default_rng(seed)
    interactive = rng.random(n) < INTERACTIVE_SHARE
    samples = np.where(interactive, 1, rng.integers(BATCH_SAMPLES[0], BATCH_SAMPLES[1] + 1, n))
    mean_service = (FIXED_MS + PER_SAMPLE_MS * samples.mean()) / 1e3
    rate = LOAD * LANES / mean_service
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    name = RESNET18.name
    return [
        Arrival(
            t,
            name,
            "pytorch",
            "fp32",
            "interactive" if i else "batch",
            s,
            DEFAULT_SLO_S["interactive" if i else "batch"],
        )
        for t, i, s in zip(times.tolist(), interactive.tolist(), samples.tolist(), strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    """Time `simulate` per policy and print jobs/s and SLO attainment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    arrivals = make_arrivals(args.jobs, args.seed)
    model = FixedServiceTime({RESNET18.name: (FIXED_MS, PER_SAMPLE_MS)})
    bases = {RESNET18.name: RESNET18.token_base}
    figures: dict[str, float | int] = {"jobs": args.jobs}
    for policy in POLICIES:
        config = SchedulerConfig(policy=policy, lanes=LANES)
        start = time.perf_counter()
        result = simulate(config, arrivals, model, bases, seed=args.seed)
        seconds = time.perf_counter() - start
        rate = args.jobs / seconds
        figures[f"{policy}_jobs_per_s"] = round(rate)
        print(
            f"{policy:>13}: {seconds:7.2f} s  {rate:>9,.0f} jobs/s  "
            f"dispatches {result.dispatches:,}  virtual {result.sim_time:,.0f} s  "
            f"SLO met: interactive {result.slo_attainment('interactive'):.4f}, "
            f"batch {result.slo_attainment('batch'):.4f}"
        )
        del result
    figures["seconds_for_1m_jobs_priority_slo"] = round(
        1_000_000 / figures["priority_slo_jobs_per_s"], 2
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
