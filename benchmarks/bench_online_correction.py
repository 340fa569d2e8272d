"""Online correction after a deliberate shift: a predictor trained at one thread count
planning for lanes that run another.

The random forest is trained on `configs/profiles/cpu.csv` (ResNet-18/50, 1 intra-op
thread). The gateway serves ResNet-18 on ONNX Runtime fp32 on one lane with
`--threads` intra-op threads (default 2, the shift) and plans with that predictor.
Its profile holds one thread count only, so the trained model cannot know what a
second thread buys: its predictions are off by the speed-up. Requests are sent one
at a time (no contention: busy_lanes stays 0), cycling batch sizes 1, 2, 4, 8: one
per batch-size bucket of the correction.

Per bucket, measured in the same run:
- observed: median service time the lane measured (`GET /v1/profile`, p50_ms);
- base: what the trained predictor alone predicts (`GET /v1/predictor`, base_ms);
- corrected: the prediction after the online correction (corrected_ms).

error = |prediction − observed| ÷ observed; the figure is corrected error ÷ base
error (below 1: the correction helps), the median over buckets.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ONNX_DIR, ROOT, emit_json, median
from loadgen.gateway_process import gateway
from predictor.latency import LatencyPredictor

BATCHES = (1, 2, 4, 8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of the lane")
    p.add_argument("--requests", type=int, default=80, help="sequential requests")
    p.add_argument("--profile", default=str(ROOT / "configs/profiles/cpu.csv"))
    p.add_argument("--half-life", type=float, default=20.0, help="correction half-life")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "predictor.mlws"
        LatencyPredictor("random_forest").train(args.profile).save(model)
        config = {
            "models": [{"name": "resnet18", "backends": ["onnx"]}],
            "lanes": {"count": 1, "kind": "thread", "threads_per_lane": args.threads},
            "onnx_dir": str(ONNX_DIR),
            "predictor": {"path": str(model), "correction_half_life": args.half_life},
            # No dispatch budget: each request runs as one dispatch of its own size.
            "scheduler": {"max_dispatch_ms": None},
        }
        with gateway(config) as url, httpx.Client(base_url=url, timeout=60) as client:
            for i in range(args.requests):
                n = BATCHES[i % len(BATCHES)]
                body = {"model": "resnet18", "class": "batch", "batch_size": n, "top_k": 1}
                client.post("/infer", json=body).raise_for_status()
            state = client.get("/v1/predictor").json()
            # The lanes' own service times (what the correction learns from), per batch.
            rows = csv.DictReader(io.StringIO(client.get("/v1/profile").text))
            observed = {int(r["batch_size"]): float(r["p50_ms"]) for r in rows}
    buckets = {b["example_batch"]: b for b in state["buckets"]}
    print(
        f"resnet18 onnx fp32, 1 lane × {args.threads} threads, predictor trained at 1 thread, "
        f"{args.requests} sequential requests"
    )
    print("batch  observed ms  base ms  base err  corrected ms  corrected err  residual")
    ratios, base_errors, corrected_errors = [], [], []
    for n in BATCHES:
        obs = observed[n]
        b = buckets[n]
        base_err = abs(b["base_ms"] - obs) / obs
        corr_err = abs(b["corrected_ms"] - obs) / obs
        base_errors.append(base_err)
        corrected_errors.append(corr_err)
        ratios.append(corr_err / base_err if base_err else float("nan"))
        print(
            f"{n:5d}  {obs:11.1f}  {b['base_ms']:7.1f}  {base_err:8.1%}  "
            f"{b['corrected_ms']:12.1f}  {corr_err:13.1%}  {b['residual_ratio']:8.3f}"
        )
    emit_json(
        {
            "threads": args.threads,
            "base_error_median": round(median(base_errors), 4),
            "corrected_error_median": round(median(corrected_errors), 4),
            "corrected_over_base_error": round(median(ratios), 4),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
