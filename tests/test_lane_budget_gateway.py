"""A real gateway whose lane holds two of its three models: an alternating stream is
served, the swaps show in /metrics and /v1/lanes, and admission counts a cold load."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from server.config import GatewayConfig
from tests.gateway_fixtures import LiveServer, tiny_config
from tests.onnx_models import write_mlp

#: tiny (10 MiB in the table) and two user ONNX files (10 MiB, the least a model costs).
MODELS = ("tiny", "m1", "m2")
#: Two of the three.
BUDGET = 25


def budget_config(onnx_dir: Path, model_dir: Path) -> GatewayConfig:
    """One lane holding two of tiny, m1 and m2; m2's load predicted at 20 s until measured."""
    return tiny_config(
        onnx_dir,
        model_dir=str(model_dir),
        models=[
            {"name": "tiny"},
            {"name": "m1", "onnx_file": str(model_dir / "mlp.onnx")},
            {"name": "m2", "onnx_file": str(model_dir / "mlp.onnx")},
        ],
        lanes={"count": 1, "kind": "thread", "threads_per_lane": 1},
        scheduler={
            "tokens": {"lane_budget": BUDGET, "load_ms": {"m2": 20000}},
            # No idle probe once the lane has run something: admission decides alone.
            "admission": {"interactive": {"refuse_late": True, "probe_s": 3600}},
        },
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("budget-models")
    write_mlp(root / "mlp.onnx")
    return root


@pytest.fixture(scope="module")
def server(onnx_dir: Path, model_dir: Path) -> Iterator[LiveServer]:
    with LiveServer(budget_config(onnx_dir, model_dir)) as live:
        yield live


def lane_models(live: LiveServer) -> list[str]:
    return httpx.get(f"{live.base_url}/v1/lanes").json()["lanes"][0]["models"]


def metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))


def test_one_lane_serves_three_models_by_swapping(server: LiveServer) -> None:
    lanes = httpx.get(f"{server.base_url}/v1/lanes").json()["lanes"]
    assert lanes[0]["models"] == ["tiny/onnx/fp32", "m1/onnx/fp32"]  # what fit, in order

    def infer(i: int) -> int:
        body = {"model": MODELS[i % 3], "class": "batch", "slo_ms": 60000, "batch_size": 2}
        return httpx.post(f"{server.base_url}/infer", json=body, timeout=120).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(infer, range(30)))
    assert codes == [200] * 30
    text = httpx.get(f"{server.base_url}/metrics").text
    loads = metric_sum(text, "mlws_model_loads_total")
    assert loads >= 1 and metric_sum(text, "mlws_model_evictions_total") == loads
    assert metric_sum(text, "mlws_model_load_seconds_count") == loads
    lanes = httpx.get(f"{server.base_url}/v1/lanes").json()["lanes"]
    assert len(lanes[0]["models"]) == 2


def test_a_model_loaded_at_run_time_is_loaded_on_demand(server: LiveServer) -> None:
    load = f"{server.base_url}/v2/repository/models/m3/load"
    body = {"parameters": {"config": json.dumps({"onnx_file": "mlp.onnx"})}}
    assert httpx.post(load, json=body, timeout=120).status_code == 200
    infer = {"model": "m3", "class": "batch", "slo_ms": 60000, "batch_size": 3}
    assert httpx.post(f"{server.base_url}/infer", json=infer, timeout=120).status_code == 200
    assert "m3/onnx/fp32" in lane_models(server)
    replace = f"{server.base_url}/v2/repository/models/m1/load"
    refused = httpx.post(replace, json=body, timeout=120)
    assert refused.status_code == 400 and "unload it, then load" in refused.text


def test_admission_counts_a_cold_load_into_the_finish(onnx_dir: Path, model_dir: Path) -> None:
    with LiveServer(budget_config(onnx_dir, model_dir)) as live:  # m2 never loaded yet

        def ask(model: str, slo_ms: float) -> httpx.Response:
            body = {"model": model, "class": "interactive", "slo_ms": slo_ms, "batch_size": 1}
            return httpx.post(f"{live.base_url}/infer", json=body, timeout=120)

        assert ask("tiny", 2000).status_code == 200  # warm: admitted
        # m2 is cold and its load is predicted at 20 s (load_ms): late for a 2 s SLO.
        refused = ask("m2", 2000)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "predicted_late"
        assert ask("m2", 60000).status_code == 200  # time for the load: admitted, loaded
        # Measured now (milliseconds, not 20 s): a cold m2 is no longer refused.
        assert ask("tiny", 2000).status_code == 200 and ask("m1", 2000).status_code == 200
        assert "m2/onnx/fp32" not in lane_models(live)
        assert ask("m2", 2000).status_code == 200


def test_a_model_over_the_lane_budget_is_too_large(onnx_dir: Path) -> None:
    config = tiny_config(onnx_dir, scheduler={"tokens": {"lane_budget": 5}})
    with LiveServer(config) as live:
        body = {"model": "tiny", "class": "batch", "batch_size": 1}
        r = httpx.post(f"{live.base_url}/infer", json=body, timeout=60)
    assert r.status_code == 413, r.text
    assert "lane budget (tokens.lane_budget) of 5" in r.text


def test_a_process_lane_loads_a_model_with_larger_inputs_on_demand(
    onnx_dir: Path, model_dir: Path
) -> None:
    # The lane starts with m1 (8 floats a sample) only; tiny (3×32×32) comes later, its
    # batches bigger than the shared memory the lane started with.
    config = tiny_config(
        onnx_dir,
        models=[{"name": "m1", "onnx_file": str(model_dir / "mlp.onnx")}, {"name": "tiny"}],
        lanes={"count": 1, "kind": "process", "threads_per_lane": 1},
        scheduler={"tokens": {"lane_budget": 15}},
    )
    with LiveServer(config) as live:
        assert lane_models(live) == ["m1/onnx/fp32"]
        for model in ("tiny", "m1", "tiny"):
            body = {"model": model, "class": "batch", "slo_ms": 60000, "batch_size": 16}
            r = httpx.post(f"{live.base_url}/infer", json=body, timeout=120)
            assert r.status_code == 200, r.text
        assert lane_models(live) == ["tiny/onnx/fp32"]
