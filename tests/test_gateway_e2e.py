"""End to end over real HTTP: one in-process uvicorn gateway serving `tiny` on 2 thread lanes.

The batch class has a 1 s micro-batching window, so concurrent batch requests
share a dispatch and an interactive request visibly is not held for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.base import LoadOptions
from backends.registry import load_runner
from server.metrics import GatewayMetrics
from tests.gateway_fixtures import LiveServer, b64_inputs, npy_bytes, tiny_config

WINDOW_MS = 1000.0
MAX_BODY_MB = 2.0


@pytest.fixture(scope="module")
def server(onnx_dir: Path) -> Iterator[LiveServer]:
    config = tiny_config(
        onnx_dir,
        max_body_mb=MAX_BODY_MB,
        scheduler={"microbatch": {"window_ms": WINDOW_MS, "max_batch": 32}},
    )
    with LiveServer(config) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def runner(server: LiveServer, onnx_dir: Path):  # the server exported the file first
    return load_runner("tiny", "onnx", LoadOptions(onnx_dir=onnx_dir, threads=1))


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def top1(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [row[0]["index"] for row in response.json()["outputs"]]


# ------------------------------------------------------------------ correctness
@pytest.mark.parametrize("job_class", ["interactive", "batch"])
def test_base64_json_matches_the_runner(client, runner, job_class: str) -> None:
    x = images(3, seed=1)
    body = {"model": "tiny", "class": job_class, "inputs": b64_inputs(x)}
    r = client.post("/infer", json=body)
    assert top1(r) == runner.run(x).argmax(axis=1).tolist()
    data = r.json()
    assert data["samples"] == 3 and data["class"] == job_class
    assert data["backend"] == "onnx" and data["precision"] == "fp32"
    assert len(data["outputs"][0]) == 5  # top_k defaults to 5
    assert set(data["timing"]) == {"queue_ms", "service_ms", "e2e_ms", "forecast_ms"}
    assert data["timing"]["forecast_ms"] is None or data["timing"]["forecast_ms"] > 0
    assert data["batch_size"] >= 3 and data["lane"] in (0, 1)
    assert r.headers["content-type"] == "application/json"


def test_nested_list_logits_match_the_runner(client, runner) -> None:
    x = images(2, seed=2)
    body = {"model": "tiny", "class": "interactive", "inputs": x.tolist(), "return": "logits"}
    r = client.post("/infer", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"]), runner.run(x), rtol=1e-5, atol=1e-6)


def test_single_sample_gets_a_batch_axis(client, runner) -> None:
    x = images(1, seed=3)
    body = {"model": "tiny", "class": "interactive", "inputs": b64_inputs(x[0]), "top_k": 2}
    r = client.post("/infer", json=body)
    assert top1(r) == [int(runner.run(x).argmax())]
    assert len(r.json()["outputs"][0]) == 2


def test_octet_stream_with_query_parameters(client, runner) -> None:
    x = images(4, seed=4)
    r = client.post(
        "/infer",
        params={"model": "tiny", "class": "interactive", "return": "logits"},
        content=x.astype("<f4").tobytes(),
        headers={"content-type": "application/octet-stream", "X-Shape": "4,3,32,32"},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"]), runner.run(x), rtol=1e-5, atol=1e-6)


def test_npy_with_headers(client, runner) -> None:
    x = images(2, seed=5)
    headers = {"content-type": "application/x-npy", "X-Model": "tiny", "X-Class": "interactive"}
    r = client.post("/infer", content=npy_bytes(x), headers=headers)
    assert top1(r) == runner.run(x).argmax(axis=1).tolist()


def test_synthesized_batch_size(client) -> None:
    r = client.post("/infer", json={"model": "tiny", "class": "interactive", "batch_size": 40})
    assert r.status_code == 200, r.text
    data = r.json()
    # 40 samples exceed max_dispatch_samples (32): two parts, reassembled in order.
    assert data["samples"] == 40 and len(data["outputs"]) == 40


# ------------------------------------------------------------ batching & priority
def _post_batch(base_url: str, samples: int) -> httpx.Response:
    body = {"model": "tiny", "class": "batch", "batch_size": samples}
    return httpx.post(f"{base_url}/infer", json=body, timeout=60)


def test_concurrent_batch_requests_share_micro_batches(server: LiveServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _post_batch(server.base_url, 2), range(8)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    sizes = [r.json()["batch_size"] for r in responses]
    # All 8 arrive well inside the 1 s window: they run in one or two shared dispatches.
    assert max(sizes) > 2, sizes
    assert sum(1 for s in sizes if s > 2) >= 6, sizes


def test_interactive_is_not_held_for_the_batch_window(server: LiveServer, client) -> None:
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(_post_batch, server.base_url, 2)
        time.sleep(0.05)  # let the batch job enter its window first
        r = client.post("/infer", json={"model": "tiny", "class": "interactive", "batch_size": 1})
        batch = held.result()
    assert r.status_code == 200 and batch.status_code == 200
    assert r.json()["timing"]["queue_ms"] < WINDOW_MS / 4
    assert batch.json()["timing"]["queue_ms"] >= WINDOW_MS * 0.9  # held for its window


def test_client_disconnect_cancels_a_queued_job(server: LiveServer, client) -> None:
    before = client.get("/stats").json()["classes"]["batch"]["outcomes"]["cancelled"]
    body = {"model": "tiny", "class": "batch", "batch_size": 1}
    with pytest.raises(httpx.ReadTimeout):  # gives up while the job waits for its window
        httpx.post(f"{server.base_url}/infer", json=body, timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = client.get("/stats").json()["classes"]["batch"]["outcomes"]["cancelled"]
        if after > before:
            break
        time.sleep(0.05)
    assert after == before + 1


# -------------------------------------------------------------------- bad input
GOOD = {"model": "tiny", "class": "interactive"}
BAD_BODIES = {
    "missing class": ({"model": "tiny", "batch_size": 1}, 422, "class"),
    "unknown field": ({**GOOD, "batch_size": 1, "clas": "x"}, 422, "clas"),
    "neither input": (GOOD, 422, "batch_size"),
    "bad class": ({**GOOD, "class": "urgent", "batch_size": 1}, 422, "class"),
    "unknown model": ({**GOOD, "model": "nope", "batch_size": 1}, 404, "model"),
    "unknown backend": ({**GOOD, "backend": "pytorch", "batch_size": 1}, 422, "backend"),
    "too many samples": ({**GOOD, "batch_size": 65}, 413, "batch_size"),
    "wrong shape": (
        {**GOOD, "inputs": {"data": b64_inputs(np.zeros((2, 3)))["data"], "shape": [2, 3]}},
        422,
        "inputs.shape",
    ),
    "wrong dtype": ({**GOOD, "inputs": {**b64_inputs(images(1)), "dtype": "int8"}}, 422, "dtype"),
    "bad base64": ({**GOOD, "inputs": {"data": "@@@", "shape": [1, 3, 32, 32]}}, 422, "data"),
    "nan": ({**GOOD, "inputs": b64_inputs(np.full((1, 3, 32, 32), np.nan))}, 422, "inputs"),
    "ragged": ({**GOOD, "inputs": [[1.0, 2.0], [3.0]]}, 422, "inputs"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_json_input_is_a_4xx_naming_the_problem(client, case: str) -> None:
    body, status, field = BAD_BODIES[case]
    r = client.post("/infer", json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"error", "detail", "field"}
    assert field in (error["field"] or "") or field in error["detail"], error


def test_nan_literal_in_json_is_rejected(client) -> None:
    text = json.dumps({**GOOD, "inputs": [[[[float("nan")] * 32] * 32] * 3]})
    r = client.post("/infer", content=text, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert r.json()["field"] in ("body", "inputs")


def test_inf_in_binary_body_is_rejected(client) -> None:
    x = images(1)
    x[0, 0, 0, 0] = np.inf
    r = client.post(
        "/infer",
        params=GOOD,
        content=x.tobytes(),
        headers={"content-type": "application/octet-stream", "X-Shape": "1,3,32,32"},
    )
    assert r.status_code == 422 and "non-finite" in r.json()["detail"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "needle"),
    [
        (b'{"model": "tiny",', {"content-type": "application/json"}, 400, "JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "object"),
        (b"abc", {"content-type": "text/plain"}, 415, "content type"),
        (b"\0" * 16, {"content-type": "application/octet-stream"}, 422, "X-Shape"),
        (b"not npy", {"content-type": "application/x-npy"}, 422, ".npy"),
    ],
)
def test_bad_bodies(client, content: bytes, headers: dict, status: int, needle: str) -> None:
    r = client.post("/infer", params=GOOD, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert needle.lower() in r.text.lower()


def test_binary_without_model_names_the_field(client) -> None:
    headers = {"content-type": "application/x-npy"}
    body = npy_bytes(images(1))
    r = client.post("/infer", params={"class": "batch"}, content=body, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "model"


def test_body_over_the_limit_is_413(client) -> None:
    big = b" " * int((MAX_BODY_MB + 0.5) * (1 << 20))
    r = client.post("/infer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_chunked_body_over_the_limit_is_413(client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the byte count must catch it
        for _ in range(int(MAX_BODY_MB * 4) + 4):
            yield b" " * (256 * 1024)

    r = client.post("/infer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_server_still_serves_after_bad_input(client) -> None:
    r = client.post("/infer", json={**GOOD, "batch_size": 1})
    assert r.status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


# ------------------------------------------------------------------- operations
def test_models_lanes_health_ready(client) -> None:
    (model,) = client.get("/v1/models").json()["models"]
    assert model["name"] == "tiny" and model["backends"] == ["onnx"]
    assert model["input_shape"] == [3, 32, 32] and model["output_shape"] == [10]
    assert model["token_cost"] == {"fp32": {"base_mb": 10, "per_sample_mb": 4, "source": "table"}}
    lanes = client.get("/v1/lanes").json()["lanes"]
    assert [lane["kind"] for lane in lanes] == ["thread", "thread"]
    assert all(lane["ready"] and lane["restarts"] == 0 for lane in lanes)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"ready": True}


def test_metrics_parse_and_hold_every_series(client) -> None:
    client.post("/infer", json={**GOOD, "batch_size": 2})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    # Every series GatewayMetrics defines ("_total" is not part of a counter family's name).
    expected = {m.name for m in GatewayMetrics().registry.collect()}
    assert len(expected) >= 10
    assert expected <= set(families), sorted(families)
    ok = [
        s.value
        for s in families["mlws_requests"].samples
        if s.labels.get("model") == "tiny" and s.labels.get("outcome") == "ok"
    ]
    assert sum(ok) >= 1
    invalid = [s for s in families["mlws_requests"].samples if s.labels.get("outcome") == "invalid"]
    assert sum(s.value for s in invalid) >= 1  # the bad-input tests above
    assert {s.labels["lane"] for s in families["mlws_lane_busy"].samples} == {"0", "1"}
    # The learned service-time model reports how wrong its last prediction was.
    errors = families["mlws_predictor_error_ratio"].samples
    assert {(s.labels["model"], s.labels["backend"]) for s in errors} == {("tiny", "onnx")}


def test_stats_have_per_class_percentiles(client) -> None:
    client.post("/infer", json={**GOOD, "batch_size": 1})
    stats = client.get("/stats").json()
    interactive = stats["classes"]["interactive"]
    assert interactive["ok"] >= 1
    assert interactive["p50_ms"] <= interactive["p99_ms"]
    assert set(stats["classes"]) == {"interactive", "batch"}
    assert stats["queue_depth"] == {"interactive": 0, "batch": 0}


def test_openapi_documents_both_body_forms(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/infer"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream", "application/x-npy"} <= set(body)
    names = {p["name"] for p in spec["paths"]["/infer"]["post"]["parameters"]}
    assert {"model", "class", "X-Shape"} <= names
    assert "InferRequest" in spec["components"]["schemas"]
    json.dumps(spec)  # serialisable
