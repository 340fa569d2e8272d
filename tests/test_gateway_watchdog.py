"""The per-dispatch watchdog against a real hang: an ONNX model whose Loop runs as
many iterations as its input says, so one request with a huge value never returns
on its own. The watchdog must answer its request with 503, replace the lane, and
the lane must serve again; on a thread lane ONNX Runtime's run is really stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway_fixtures import LiveServer, b64_inputs, parse_gateway_config

#: Iterations of the hanging request: days of looping at any speed.
FOREVER = 1e15


def write_loop_onnx(path: Path) -> Path:
    """y = x on [N, 4], computed by a Loop of int(max(x)) identity iterations."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Cast", ["m"], ["trips"], to=TensorProto.INT64),
        helper.make_node(
            "Constant", [], ["go"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])
        ),
        helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body),
    ]
    graph = helper.make_graph(
        nodes,
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module", params=["thread", "process"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, onnx_dir: Path
) -> Iterator[LiveServer]:
    loop = write_loop_onnx(tmp_path_factory.mktemp("loop") / "loop.onnx")
    config = parse_gateway_config(
        {
            "models": [{"name": "loop", "onnx_file": str(loop)}],
            "lanes": {
                "count": 1,
                "kind": request.param,
                "threads_per_lane": 1,
                "watchdog_min_s": 1.0,
                "watchdog_factor": 1.0,
            },
            "onnx_dir": str(onnx_dir),
            "drain_timeout_s": 5,
        }
    )
    with LiveServer(config) as live:
        yield live


def infer(server: LiveServer, value: float) -> httpx.Response:
    x = np.full((1, 4), value, dtype=np.float32)
    body = {"model": "loop", "class": "batch", "inputs": b64_inputs(x), "return": "logits"}
    return httpx.post(f"{server.base_url}/infer", json=body, timeout=120)


def lane0(server: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/v1/lanes", timeout=10).json()["lanes"][0]


def test_a_hung_call_gets_503_and_the_lane_serves_again(server: LiveServer) -> None:
    before = lane0(server)["restarts"]
    for round_ in range(2):
        hung = infer(server, FOREVER)
        assert hung.status_code == 503, hung.text
        assert "watchdog" in hung.json()["detail"]
        ok = infer(server, 2.0)  # queues behind the lane's reload, then runs
        assert ok.status_code == 200, ok.text
        assert ok.json()["outputs"][0] == [2.0] * 4
        assert lane0(server)["restarts"] == before + round_ + 1
    assert lane0(server)["ready"]


def test_the_hung_onnx_run_is_stopped_not_abandoned(server: LiveServer) -> None:
    if server.config.lanes.kind != "thread":
        pytest.skip("a process lane's worker is killed outright")
    before = [t for t in threading.enumerate() if t.name.startswith("lane0")]
    assert infer(server, FOREVER).status_code == 503
    # The hung lane thread ends once ONNX Runtime has stopped its run; a thread left
    # looping would burn a core for ever. Only its replacement may remain.
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in before) and time.monotonic() < deadline:
        time.sleep(0.1)
    stuck = [t.name for t in before if t.is_alive()]
    assert not stuck, f"the hung lane thread still runs: {stuck}"
    assert infer(server, 1.0).status_code == 200
