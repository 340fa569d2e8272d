"""The OpenAPI schema is the contract, and the server keeps it: schemathesis against a
real gateway (the tiny model), every check on, failing on any finding.

`st run` (schemathesis' CLI) generates requests from the gateway's own
/openapi.json — valid ones, invalid ones, undeclared methods — and checks each
answer: no 5xx, only documented statuses, content types, headers and bodies,
invalid data refused, valid data accepted, 405 with `Allow`. It runs in a child
process so that its HTTP client and the server's event loop do not share a GIL.

What no check can apply to, and why:
- positive_data_acceptance on a tensor that disagrees with its shape: JSON Schema
  cannot relate a base64 string's length to a shape (tests/api_contract_hooks.py
  drops exactly those reports; requests without a tensor are held to it);
- response_schema_conformance on /metrics (Prometheus text) and /v1/profile (CSV):
  documented as strings of their media types, which is all a schema can say;
- 401: the access-controlled run sends a token (a request without one is refused
  before its data is read, so no other check could run); tests/test_gateway_auth.py
  covers 401 and its challenge. That run holds the `inference` role only, so the
  operator's routes answer it 403, which the schema documents.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import REPO, LiveServer, tiny_config

#: Generated examples per operation and phase: a few hundred requests per route in all.
MAX_EXAMPLES = 100
#: With access control on, what changes is who may call what: fewer suffice.
MAX_EXAMPLES_WITH_TOKENS = 15
#: The run is killed past this (a hang is a failure, not a pass).
RUN_TIMEOUT_S = 280


#: The test gateway's class SLOs and admission: generated requests arrive one at a time,
#: so none should be refused for load, and a 503 for shed work would read as a server
#: error. Admission still refuses what a tiny per-request `slo_ms` cannot meet (429,
#: documented).
NO_LOAD_REFUSALS: dict[str, Any] = {
    "slo_ms": {"interactive": 10_000, "batch": 10_000},
    "scheduler": {"admission": {"interactive": {"refuse_late": True, "shed_late": False}}},
}


@pytest.fixture(scope="module")
def contract_server(onnx_dir: Path) -> Iterator[LiveServer]:
    """The tiny gateway, open (no access control)."""
    with LiveServer(tiny_config(onnx_dir, **NO_LOAD_REFUSALS)) as live:
        yield live


def test_server_keeps_its_openapi_contract(onnx_dir: Path, tmp_path: Path) -> None:
    # A gateway of its own: the fuzzing calls the repository's unload route too, which
    # would leave the shared gateway without its model for the tests below.
    with LiveServer(tiny_config(onnx_dir, **NO_LOAD_REFUSALS)) as live:
        run_schemathesis(live, tmp_path, MAX_EXAMPLES)


def test_server_keeps_its_contract_with_access_control(onnx_dir: Path, tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "inference.token"
    token_file.write_text(token)
    auth = {"tokens": [{"name": "client", "roles": ["inference"], "file": str(token_file)}]}
    with LiveServer(tiny_config(onnx_dir, auth=auth, **NO_LOAD_REFUSALS)) as live:
        header = f"Authorization: Bearer {token}"
        run_schemathesis(live, tmp_path, MAX_EXAMPLES_WITH_TOKENS, "--header", header)


def run_schemathesis(server: LiveServer, folder: Path, examples: int, *extra: str) -> None:
    """`st run` against `server`'s own schema, every check on; fails on any finding."""
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{server.base_url}/openapi.json"),
        *("--checks", "all", "--max-examples", str(examples), "--workers", "1"),
        "--continue-on-failure",
        *("--suppress-health-check", "too_slow"),  # two shared cores: not the API's speed
        *("--request-timeout", "30", "--no-color", "--report-dir", str(folder), *extra),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api_contract_hooks", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found contract violations:\n{output[-20_000:]}"
    # Every documented operation was exercised, not skipped for an unreadable schema.
    assert f"Tested: {len(_operations(server))}" in output, output[-5000:]


def _operations(server: LiveServer) -> list[tuple[str, str]]:
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    return [(path, method) for path, item in paths.items() for method in item]


# The findings of the hardening report, each as the request that showed it.
JSON_HEADERS = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("POST", "/v2/health/live", "GET"), ("PUT", "/infer", "POST"), ("DELETE", "/stats", "GET")],
)
def test_a_method_a_route_does_not_take_is_405_with_allow(
    contract_server: LiveServer, method: str, path: str, allow: str
) -> None:
    with contract_server.client() as client:
        r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"batch_size": True}, "batch_size", "not a boolean"),
        ({"batch_size": "3"}, "batch_size", "not a boolean or a string"),
        ({"inputs": {"data": "", "shape": [True, 3, 32, 32]}}, "inputs.shape.0", "integer"),
        ({"batch_size": 1, "top_k": False}, "top_k", "integer"),
    ],
)
def test_booleans_and_strings_are_not_integers(
    contract_server: LiveServer, body: dict[str, Any], field: str, says: str
) -> None:
    with contract_server.client() as client:
        r = client.post("/infer", json={"model": "tiny", "class": "batch", **body})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert says in r.json()["detail"]


def test_a_whole_number_written_as_a_float_is_an_integer(contract_server: LiveServer) -> None:
    with contract_server.client() as client:
        r = client.post("/infer", json={"model": "tiny", "class": "batch", "batch_size": 2.0})
    assert r.status_code == 200, r.text
    assert r.json()["samples"] == 2


def test_slo_ms_nan_is_named_as_not_finite(contract_server: LiveServer) -> None:
    body = b'{"model": "tiny", "class": "batch", "batch_size": 1, "slo_ms": NaN}'
    with contract_server.client() as client:
        r = client.post("/infer", content=body, headers=JSON_HEADERS)
    assert r.status_code == 422
    assert r.json()["field"] == "slo_ms"
    assert "finite" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/infer", "/v2/models/tiny/infer"])
def test_a_compressed_body_is_415_on_both_inference_routes(
    contract_server: LiveServer, path: str
) -> None:
    headers = {**JSON_HEADERS, "content-encoding": "gzip"}
    with contract_server.client() as client:
        r = client.post(path, content=b"\x1f\x8b not read", headers=headers)
    assert r.status_code == 415
    assert "Content-Encoding" in r.text


def test_an_unknown_model_is_quoted_short(contract_server: LiveServer) -> None:
    name = "m" * 100_000
    with contract_server.client() as client:
        r = client.post("/infer", json={"model": name, "class": "batch", "batch_size": 1})
    assert r.status_code == 404
    assert len(r.text) < 400


def test_the_v2_health_answers_are_a_bare_status(contract_server: LiveServer) -> None:
    with contract_server.client() as client:
        schema = client.get("/openapi.json").json()
        for path in ("/v2/health/live", "/v2/health/ready"):
            r = client.get(path)
            assert (r.status_code, r.content, r.headers.get("content-type")) == (200, b"", None)
            assert schema["paths"][path]["get"]["responses"]["200"]["content"] == {}
        metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert list(metrics) == ["text/plain"]
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")
