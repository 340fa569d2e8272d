"""The plain baseline: a FastAPI endpoint calling ONNX Runtime in its thread pool.

What a competent engineer writes first: one ONNX Runtime session (single-thread
intra-op, shared by the thread pool: concurrent requests run side by side and the
OS time-slices them), a plain `def` route so FastAPI runs it on its worker
threads, no batching, no classes, no admission. It speaks the part of mlws's
`POST /infer` the benchmarks send (`batch_size`: the input is synthesized) and
answers in the same shape, so one load generator drives both.

    python benchmarks/baseline_server.py --onnx models/onnx/resnet18.onnx --port 8100
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    """The fields the baseline reads; the rest of an mlws body is accepted and ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    batch_size: int = Field(1, ge=1, le=64)
    slo_ms: float | None = None
    job_class: str = Field("interactive", alias="class")


def build_app(onnx_path: str, threads: int) -> FastAPI:
    """The baseline app around one ONNX Runtime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape[1:]]
    pool = np.random.default_rng(0).standard_normal((64, *shape), dtype=np.float32)
    session.run(None, {name: pool[:1]})  # warm up
    app = FastAPI(title="baseline")

    @app.post("/infer")
    def infer(body: Request) -> dict[str, Any]:
        # A plain def route: FastAPI runs it on its thread pool, as a first server would.
        start = time.perf_counter()
        (logits,) = session.run(None, {name: pool[: body.batch_size]})
        service_ms = (time.perf_counter() - start) * 1e3
        top = np.argmax(logits, axis=1)
        return {
            "outputs": [[{"index": int(i), "score": 1.0}] for i in top],
            "timing": {"queue_ms": 0.0, "service_ms": service_ms, "e2e_ms": service_ms},
            "slo_met": None,
        }

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="ONNX file to serve")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per run")
    args = parser.parse_args()
    app = build_app(args.onnx, args.threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
