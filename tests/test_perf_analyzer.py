"""Triton's own load tool, perf_analyzer, against a real gateway over HTTP and gRPC.

One gateway serving `tiny`, HTTP and gRPC on their own ports. perf_analyzer
(as scripts/install-perf-analyzer.sh installs it) asks for the model's metadata and Triton
model configuration, then runs concurrency 1 and 2, three windows of a few
dozen answers each (its search for stable windows off, so the run is bounded),
and writes its CSV report: it must exit 0 and report a throughput at each level.
The SLOs are generous so that a busy machine makes the run slower, never
refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as triton

from loadgen.triton_perf import command, count_windows, read_report
from tests.gateway_fixtures import LiveServer, tiny_config

#: Answers in each of the three measurement windows per concurrency level.
WINDOW_REQUESTS = 20
#: The most one perf_analyzer run may take; a hang is a failure, not a pass.
RUN_TIMEOUT_S = 120
GENEROUS_SLOS = {"slo_ms": {"interactive": 10_000, "batch": 10_000}}


@pytest.fixture(scope="module")
def gateway(onnx_dir: Path) -> Iterator[LiveServer]:
    """The tiny gateway with gRPC on a port of its own."""
    config = tiny_config(onnx_dir, grpc_port=0, **GENEROUS_SLOS)
    with LiveServer(config) as live:
        yield live


# ------------------------------------------------------------------ the model configuration
def test_model_config_matches_metadata(gateway: LiveServer) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gateway.port}", network_timeout=60)
    try:
        config = client.get_model_config("tiny")
        meta = client.get_model_metadata("tiny")
    finally:
        client.close()
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == gateway.config.max_request_samples
    # The metadata's shapes are the configuration's dims behind a batch axis.
    for kind, tensors in (("input", meta["inputs"]), ("output", meta["outputs"])):
        assert [(t["name"], t["data_type"], [-1, *t["dims"]]) for t in config[kind]] == [
            (t["name"], "TYPE_" + t["datatype"], t["shape"]) for t in tensors
        ]


def test_model_config_of_a_version_and_unknown_models(gateway: LiveServer) -> None:
    with gateway.client() as http:
        assert http.get("/v2/models/tiny/versions/1/config").json()["name"] == "tiny"
        for path in ("/v2/models/nope/config", "/v2/models/tiny/versions/2/config"):
            r = http.get(path)
            assert r.status_code == 404 and "error" in r.json(), (path, r.text)
        assert "/v2/models/{name}/config" in http.get("/openapi.json").json()["paths"]


# ------------------------------------------------------------------ perf_analyzer
def run_perf_analyzer(url: str, protocol: str, tmp_path: Path) -> str:
    """Run perf_analyzer at concurrency 1 and 2; returns its output, checks its report."""
    report = tmp_path / f"{protocol}.csv"
    argv = command("tiny", url, protocol, (1, 2), report, count_windows(WINDOW_REQUESTS))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    levels = read_report(report)
    assert [level.concurrency for level in levels] == [1, 2], output[-3000:]
    for level in levels:
        assert level.throughput > 0 and 0 < level.p50_ms <= level.p99_ms, level
    assert "Throughput:" in output
    return output


def test_perf_analyzer_over_http(gateway: LiveServer, tmp_path: Path) -> None:
    run_perf_analyzer(f"127.0.0.1:{gateway.port}", "http", tmp_path)


def test_perf_analyzer_over_grpc(gateway: LiveServer, tmp_path: Path) -> None:
    run_perf_analyzer(gateway.grpc_url, "grpc", tmp_path)
