"""The protocol-neutral request core, called directly on a real gateway's event loop.

No HTTP on the core's side: the calls below are what any protocol adapter makes.
POST /infer on the same gateway is the reference the core's answers must match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from server.codecs import InputError
from server.errors import UnknownModel, UnknownOption, classify
from server.gateway import Gateway
from server.request_core import Answer, InferCall, infer
from tests.gateway_fixtures import LiveServer, b64_inputs, tiny_config
from workloads.specs import TINY

T = TypeVar("T")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    onnx_dir: Path = tmp_path_factory.mktemp("onnx")
    with LiveServer(tiny_config(onnx_dir)) as server:
        yield server


def on_loop(live: LiveServer, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the gateway's own event loop (the one its dispatcher runs on)."""
    gw: Gateway = live.app.state.gateway
    assert gw.loader is not None
    return asyncio.run_coroutine_threadsafe(coro, gw.loader.get_loop()).result(timeout=60)


def call(live: LiveServer, request: InferCall, gone: Any = None) -> Answer | None:
    gw = live.app.state.gateway

    async def run() -> Answer | None:
        return await infer(gw, request, None if gone is None else gone())

    return on_loop(live, run())


def test_the_core_answers_what_post_infer_answers(live: LiveServer) -> None:
    batch = np.random.default_rng(3).standard_normal((3, *TINY.input_shape), dtype=np.float32)
    answer = call(live, InferCall("tiny", "batch", inputs=batch))
    assert answer is not None and answer.outputs.shape == (3, *TINY.output_shape)
    assert answer.job.outcome == "ok" and answer.job.samples == 3
    body = {"model": "tiny", "class": "batch", "inputs": b64_inputs(batch), "return": "logits"}
    with live.client() as client:
        http = client.post("/infer", json=body).json()
    np.testing.assert_allclose(np.array(http["outputs"]), answer.outputs, rtol=1e-5)


def test_one_sample_gets_a_batch_axis_and_a_size_alone_is_synthesized(live: LiveServer) -> None:
    one = np.zeros(TINY.input_shape, np.float32)
    answer = call(live, InferCall("tiny", inputs=one, slo_ms=5000))
    assert answer is not None and answer.outputs.shape[0] == 1 and answer.slo_ms == 5000
    synthetic = call(live, InferCall("tiny", "batch", samples=4))
    assert synthetic is not None and synthetic.job.samples == 4


@pytest.mark.parametrize(
    ("request_", "error", "status"),
    [
        (InferCall("nope", samples=1), UnknownModel, 404),
        (InferCall("tiny", "urgent", samples=1), InputError, 422),
        (InferCall("tiny", slo_ms=-1.0, samples=1), InputError, 422),
        (InferCall("tiny", backend="tensorrt", samples=1), UnknownOption, 422),
        (InferCall("tiny", samples=10_000), InputError, 413),
        (
            InferCall("tiny", inputs=np.full((1, *TINY.input_shape), np.nan, np.float32)),
            InputError,
            422,
        ),
    ],
)
def test_every_refusal_is_one_classified_error(
    live: LiveServer, request_: InferCall, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as caught:
        call(live, request_)
    assert classify(caught.value).status == status


def test_a_caller_that_goes_away_cancels_its_job(live: LiveServer) -> None:
    gw: Gateway = live.app.state.gateway
    before = gw.metrics.render()[0].decode()

    async def gone_at_once() -> None:
        return None  # the client is gone before the job can have run

    assert call(live, InferCall("tiny", "batch", samples=64), gone=gone_at_once) is None
    after = gw.metrics.render()[0].decode()
    assert _cancelled(after) == _cancelled(before) + 1
    assert on_loop(live, _queue_depth(gw)) == 0


async def _queue_depth(gw: Gateway) -> int:
    return gw.scheduler.queue_depth("batch")


def _cancelled(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("mlws_requests_total{") and 'outcome="cancelled"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
