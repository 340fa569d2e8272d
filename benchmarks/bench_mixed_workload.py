"""(c) The mixed workload through the real gateway, once per policy.

70 % load, 30 % interactive single images, the rest batch jobs of 16-32 images,
ResNet-18 on ONNX Runtime, 2 lanes × 1 thread (configs/live_mixed.yaml). Every
policy gets the *same* arrival trace. Prints interactive P99 and SLO attainment
(and batch throughput) per policy, plus the simulator's prediction for the same
arrivals; the last line is one JSON object.

    python benchmarks/bench_mixed_workload.py [--duration 40] [--policies fifo,priority_slo]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from loadgen.config import load_experiment_config
from loadgen.experiment import run_experiment
from scheduling.policies import POLICIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/live_mixed.yaml")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of arrivals")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--quick", action="store_true", help="10 s per policy")
    args = parser.parse_args()
    base = load_experiment_config(args.config)
    duration = 10.0 if args.quick else args.duration
    results: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policies.split(","):
            scheduler = base.scheduler.model_copy(update={"policy": policy})
            config = base.model_copy(update={"scheduler": scheduler, "duration_s": duration})
            out = run_experiment(config, Path(tmp), run_id=policy, quiet=True)
            summary = json.loads((out / "summary.json").read_text())
            inter, batch = summary["classes"]["interactive"], summary["classes"]["batch"]
            twin = summary["sim_vs_live"]["interactive"]
            results[policy] = {
                "interactive_p99_ms": inter["latency_ms"]["e2e"]["p99"],
                "interactive_slo_attainment": inter["slo"]["attainment"],
                "batch_slo_attainment": batch["slo"]["attainment"],
                "batch_samples_per_s": batch["throughput"]["samples_per_s"],
                "sim_interactive_p99_ms": twin["p99_ms"]["sim"],
                "sim_interactive_slo_attainment": twin["slo_attainment"]["sim"],
            }
            r = results[policy]
            print(
                f"{policy:<13} interactive p99 {r['interactive_p99_ms'] or float('nan'):7.1f} ms"
                f"  SLO {r['interactive_slo_attainment']:.1%}"
                f" (sim p99 {r['sim_interactive_p99_ms'] or float('nan'):.1f} ms,"
                f" {r['sim_interactive_slo_attainment']:.1%})"
                f"  batch SLO {r['batch_slo_attainment']:.1%}"
                f"  batch {r['batch_samples_per_s']:.1f} samples/s",
                flush=True,
            )
    print(json.dumps({"duration_s": duration, "load": base.load, "policies": results}))


if __name__ == "__main__":
    main()
