"""The one gateway test on a real model: ResNet-18 on ONNX Runtime, logits checked closely."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from backends.base import LoadOptions
from backends.registry import load_runner
from tests.gateway_fixtures import LiveServer, b64_inputs, parse_gateway_config


@pytest.mark.slow
def test_resnet18_logits_match_the_runner(onnx_dir: Path) -> None:
    config = parse_gateway_config(
        {
            "models": [{"name": "resnet18"}],
            "lanes": {"count": 1, "threads_per_lane": 2},
            "onnx_dir": str(onnx_dir),
            # Small dispatches keep the warm-up (batch 1 and the largest dispatch) cheap.
            "scheduler": {"max_dispatch_samples": 2, "microbatch": {"max_batch": 2}},
        }
    )
    x = np.random.default_rng(18).standard_normal((3, 3, 224, 224), dtype=np.float32)
    with LiveServer(config) as live:
        body = {"model": "resnet18", "class": "batch", "inputs": b64_inputs(x), "return": "logits"}
        r = httpx.post(f"{live.base_url}/infer", json=body, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["samples"] == 3 and data["batch_size"] <= 2  # split into two dispatches
    logits = np.array(data["outputs"], dtype=np.float32)
    expected = load_runner("resnet18", "onnx", LoadOptions(onnx_dir=onnx_dir, threads=2)).run(x)
    assert logits.shape == (3, 1000)
    # Random-weight ResNets often agree on top-1 for any input: compare the logits too.
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert logits.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()


@pytest.mark.slow
def test_learned_service_times_cap_dispatches_at_the_budget(onnx_dir: Path) -> None:
    # No sample cap below 8: only the 20 ms budget, learned from calibration runs,
    # can split this request (8 ResNet-18 images take far longer than 20 ms on a CPU).
    config = parse_gateway_config(
        {
            "models": [{"name": "resnet18"}],
            "lanes": {"count": 1, "threads_per_lane": 2},
            "onnx_dir": str(onnx_dir),
            "scheduler": {
                "max_dispatch_samples": 8,
                "microbatch": {"max_batch": 8},
                "max_dispatch_ms": 20,
            },
        }
    )
    with LiveServer(config) as live:
        body = {"model": "resnet18", "class": "batch", "batch_size": 8, "top_k": 1}
        r = httpx.post(f"{live.base_url}/infer", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["samples"] == 8
    assert r.json()["batch_size"] < 8
