"""The Open Inference Protocol (KServe v2) routes, driven by NVIDIA's own client.

One in-process gateway serving `tiny`; `tritonclient.http` talks to it as it
would to Triton, and every answer is checked against POST /infer on the same
input. Error cases use raw HTTP to check the protocol's `{"error": ...}` body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.gateway_fixtures import LiveServer, parse_gateway_config

HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(tiny_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{tiny_server.port}", network_timeout=60)
    yield c
    c.close()


def images(n: int, seed: int = 0, shape: tuple[int, ...] = (3, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def triton_infer(
    client: triton.InferenceServerClient,
    x: np.ndarray,
    *,
    binary: bool,
    model: str = "tiny",
    **kwargs: Any,
) -> triton.InferResult:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = [triton.InferRequestedOutput("output", binary_data=binary)]
    return client.infer(model, [tensor], outputs=wanted, **kwargs)


def infer_logits(http: httpx.Client, x: np.ndarray, model: str = "tiny") -> np.ndarray:
    """The same input through POST /infer (base64-free nested lists keep it simple)."""
    body = {"model": model, "class": "batch", "inputs": x.tolist(), "return": "logits"}
    r = http.post("/infer", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json()["outputs"], dtype=np.float32)


# ------------------------------------------------------------------ health, metadata
def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("tiny")
    assert meta["name"] == "tiny" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    server = client.get_server_metadata()
    assert server["name"] == "mlws" and "binary_tensor_data" in server["extensions"]


# ------------------------------------------------------------------ inference
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_post_infer(client, tiny_http, binary: bool) -> None:
    x = images(3, seed=7)
    result = triton_infer(client, x, binary=binary)
    logits = result.as_numpy("output")
    expected = infer_logits(tiny_http, x)
    assert logits.dtype == np.float32 and logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert logits.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
    output = result.get_output("output")
    assert ("binary_data_size" in output.get("parameters", {})) == binary


def test_raw_binary_body_and_nested_json_data(tiny_http) -> None:
    x = images(2, seed=3)
    header = json.dumps(
        {
            "id": "r1",
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 3, 32, 32],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    r = tiny_http.post(
        "/v2/models/tiny/infer",
        content=header + x.astype("<f4").tobytes(),
        headers={HEADER_LENGTH: str(len(header))},
    )
    assert r.status_code == 200, r.text
    size = int(r.headers[HEADER_LENGTH])
    answer = json.loads(r.content[:size])
    assert answer["id"] == "r1" and answer["outputs"][0]["parameters"]["binary_data_size"] == 80
    binary_logits = np.frombuffer(r.content[size:], dtype="<f4").reshape(2, 10)
    nested = {"inputs": [{"name": "input", "shape": [2, 3, 32, 32], "datatype": "FP32"}]}
    nested["inputs"][0]["data"] = x.tolist()  # nested lists, not flat
    r = tiny_http.post("/v2/models/tiny/infer", json=nested)
    assert r.status_code == 200 and HEADER_LENGTH not in r.headers
    json_logits = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(binary_logits, json_logits, rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classification_output(client, tiny_http, binary: bool) -> None:
    x = images(2, seed=5)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    wanted = [triton.InferRequestedOutput("output", binary_data=binary, class_count=3)]
    labels = client.infer("tiny", [tensor], outputs=wanted).as_numpy("output")
    assert labels.shape == (2, 3)
    top = [
        [int(str(v.decode() if isinstance(v, bytes) else v).split(":")[1]) for v in row]
        for row in labels
    ]
    expected = np.argsort(-infer_logits(tiny_http, x), axis=1, kind="stable")[:, :3]
    assert top == expected.tolist()


# ------------------------------------------------------------------ class and SLO mapping
@pytest.mark.parametrize(
    ("samples", "kwargs", "job_class", "slo_ms"),
    [
        (1, {}, "interactive", 100.0),  # one sample: interactive by default
        (4, {}, "batch", 1000.0),  # more: batch
        (4, {"parameters": {"class": "interactive"}}, "interactive", 100.0),
        (4, {"priority": 1}, "interactive", 100.0),  # Triton's highest priority level
        (1, {"priority": 2}, "batch", 1000.0),
        (1, {"parameters": {"class": "batch"}, "timeout": 250_000}, "batch", 250.0),  # µs
        (2, {"parameters": {"slo_ms": 50}}, "batch", 50.0),
    ],
    ids=["size1", "size4", "class", "priority1", "priority2", "timeout", "slo_ms"],
)
def test_parameters_choose_class_and_slo(
    client, tiny_http, samples: int, kwargs: dict[str, Any], job_class: str, slo_ms: float
) -> None:
    before = tiny_http.get("/stats").json()["classes"]
    result = triton_infer(client, images(samples), binary=True, **kwargs)
    answer = result.get_response()["parameters"]
    assert answer["class"] == job_class and answer["slo_ms"] == slo_ms
    assert isinstance(answer["slo_met"], bool) and answer["e2e_ms"] > 0
    after = tiny_http.get("/stats").json()["classes"]
    other = "batch" if job_class == "interactive" else "interactive"
    assert after[job_class]["count"] == before[job_class]["count"] + 1
    assert after[other]["count"] == before[other]["count"]


# ------------------------------------------------------------------ errors
def test_client_sees_v2_errors(client) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton_infer(client, images(1), binary=True, model="nope")
    assert info.value.status() == "404" and "unknown model 'nope'" in info.value.message()
    bad = triton.InferInput("input", [1, 3, 32, 32], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 3, 32, 32), dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", [bad])
    assert info.value.status() == "422" and "FP32" in info.value.message()


def _tensor(shape: list[int], **extra: Any) -> dict[str, Any]:
    count = int(np.prod(shape))
    return {"name": "input", "shape": shape, "datatype": "FP32", "data": [0.5] * count, **extra}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "words"),
    [
        ("/v2/models/nope/infer", {"inputs": [_tensor([1, 3, 32, 32])]}, {}, 404, "unknown model"),
        (
            "/v2/models/tiny/versions/2/infer",
            {"inputs": [_tensor([1, 3, 32, 32])]},
            {},
            404,
            "version",
        ),
        (
            "/v2/models/tiny/infer",
            {"inputs": [_tensor([1, 3, 32, 32], datatype="FP16")]},
            {},
            422,
            "datatype",
        ),
        ("/v2/models/tiny/infer", {"inputs": [_tensor([2, 3, 16, 16])]}, {}, 422, "expected shape"),
        (
            "/v2/models/tiny/infer",
            {"inputs": [_tensor([1, 3, 32, 32], name="x")]},
            {},
            422,
            "input",
        ),
        (
            "/v2/models/tiny/infer",
            {"inputs": [{**_tensor([1, 3, 32, 32]), "data": [1.0, 2.0]}]},
            {},
            422,
            "values",
        ),
        (
            "/v2/models/tiny/infer",
            {"inputs": [_tensor([1, 3, 32, 32])], "parameters": {"class": "urgent"}},
            {},
            422,
            "class",
        ),
        ("/v2/models/tiny/infer", {"inputs": []}, {}, 422, "inputs"),
        ("/v2/models/tiny/infer", b"{not json", {}, 400, "JSON"),
        ("/v2/models/tiny/infer", b"{}", {HEADER_LENGTH: "99"}, 400, HEADER_LENGTH),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "datatype",
        "shape",
        "input-name",
        "data-count",
        "class",
        "no-inputs",
        "bad-json",
        "header-length",
    ],
)
def test_errors_use_the_v2_body(
    tiny_http, path: str, body: Any, headers: dict[str, str], status: int, words: str
) -> None:
    if isinstance(body, bytes):
        r = tiny_http.post(path, content=body, headers=headers)
    else:
        r = tiny_http.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    data = r.json()
    assert list(data) == ["error"] and words.lower() in data["error"].lower()


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v2/models/nope", "unknown model"),
        ("/v2/models/tiny/versions/3", "no version '3'"),
        ("/v2/cudasharedmemory/status", "not part of this server's v2 api"),
    ],
)
def test_unknown_paths_are_404_in_v2_form(tiny_http, path: str, words: str) -> None:
    r = tiny_http.get(path)
    assert r.status_code == 404 and list(r.json()) == ["error"]
    assert words in r.json()["error"].lower()


# ------------------------------------------------------------------ a real model
@pytest.mark.slow
def test_resnet18_over_v2(onnx_dir: Path) -> None:
    config = parse_gateway_config(
        {
            "models": [{"name": "resnet18"}],
            "lanes": {"count": 1, "threads_per_lane": 2},
            "onnx_dir": str(onnx_dir),
            # Small dispatches keep the warm-up (batch 1 and the largest dispatch) cheap.
            "scheduler": {"max_dispatch_samples": 2, "microbatch": {"max_batch": 2}},
        }
    )
    x = images(1, seed=18, shape=(3, 224, 224))
    with LiveServer(config) as live, live.client(timeout=120) as http:
        c = triton.InferenceServerClient(url=f"127.0.0.1:{live.port}", network_timeout=120)
        try:
            meta = c.get_model_metadata("resnet18")
            logits = triton_infer(c, x, binary=True, model="resnet18").as_numpy("output")
        finally:
            c.close()
        expected = infer_logits(http, x, model="resnet18")
    assert meta["inputs"][0]["shape"] == [-1, 3, 224, 224]
    assert meta["outputs"][0]["shape"] == [-1, 1000]
    assert logits.shape == (1, 1000)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
