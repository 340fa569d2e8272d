"""A gateway whose lanes follow a real Ray cluster's nodes (`ray.cluster_utils`).

One cluster and one gateway for the module (starting Ray and its actors takes
seconds): a head without CPUs (no lanes: a node gets lanes only with room for a
whole share) and two worker nodes of 2 CPUs, every address on loopback. With
`per_node`, each worker node gets one interactive and one batch lane. The tests
then take the cluster through what happens to one: a node dies under load, a
node joins. Each test asserts only what it makes happen itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backends.base import LoadOptions
from backends.registry import load_runner
from tests.gateway_fixtures import LiveServer, b64_inputs, tiny_config
from tests.ray_fixtures import LocalCluster, local_cluster

#: Tokens per node: /metrics shows one budget per node with lanes.
CAPACITY = 400


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(head_cpus=0, worker_cpus=[2, 2]) as started:
        yield started


@pytest.fixture(scope="module")
def gateway(cluster: LocalCluster, onnx_dir: Path) -> Iterator[LiveServer]:
    groups = [
        {"name": "interactive", "count": 1, "classes": ["interactive"], "threads": 1},
        {"name": "batch", "count": 1, "classes": ["batch"], "threads": 1},
    ]
    config = tiny_config(
        onnx_dir,
        lanes={
            "kind": "ray",
            "ray": {"address": cluster.address, "per_node": True, "membership_s": 0.2},
        },
        scheduler={
            "lane_groups": groups,
            "microbatch": {"enabled": True, "window_ms": 20, "classes": ["batch"]},
            "tokens": {"capacity": CAPACITY},
        },
        slo_ms={"interactive": 10_000, "batch": 20_000},  # nothing refused as late here
    )
    with LiveServer(config) as live:
        yield live


def lanes(live: LiveServer) -> list[dict[str, Any]]:
    return httpx.get(f"{live.base_url}/v1/lanes", timeout=30).json()["lanes"]


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def infer(client: httpx.Client, x: np.ndarray, job_class: str) -> httpx.Response:
    body = {"model": "tiny", "class": job_class, "inputs": b64_inputs(x), "return": "logits"}
    return client.post("/infer", json=body)


def wait_for(what: str, check: Any, timeout_s: float = 120.0) -> Any:
    """Poll `check()` until it returns something truthy (the test's own deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def test_lanes_on_two_nodes_serve_with_the_backends_top1(
    gateway: LiveServer, onnx_dir: Path
) -> None:
    rows = lanes(gateway)
    nodes = {r["node"] for r in rows}
    assert len(nodes) == 2 and all(r["kind"] == "ray" and r["state"] == "ready" for r in rows)
    for node in nodes:  # one share per node: an interactive and a batch lane
        assert sorted(r["group"] for r in rows if r["node"] == node) == ["batch", "interactive"]
    x = images(6, seed=1)
    expected = load_runner("tiny", "onnx", LoadOptions(onnx_dir=onnx_dir, threads=1)).run(x)
    with gateway.client() as client:
        r = infer(client, x[:1], "interactive")
        assert r.status_code == 200, r.text
        assert np.argmax(r.json()["outputs"][0]) == np.argmax(expected[0])
        with ThreadPoolExecutor(6) as pool:  # concurrent batch jobs share micro-batches
            answers = list(pool.map(lambda i: infer(client, x[i : i + 1], "batch"), range(6)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    tops = [int(np.argmax(a.json()["outputs"][0])) for a in answers]
    assert tops == [int(t) for t in expected.argmax(axis=1)]
    assert max(a.json()["batch_size"] for a in answers) > 1
    metrics = httpx.get(f"{gateway.base_url}/metrics", timeout=30).text
    assert f"mlws_tokens_capacity {2 * CAPACITY}.0" in metrics  # one budget per node


def test_a_node_dying_under_load_leaves_every_request_answered(
    cluster: LocalCluster, gateway: LiveServer
) -> None:
    victim = lanes(gateway)[0]["node"]
    sent = 48
    x = images(1, seed=2)

    def one(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=gateway.base_url, timeout=120) as client:
            r = infer(client, x, "interactive" if i % 2 else "batch")
            return r.status_code, r.text

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(sent)]
        wait_for("a few answers", lambda: sum(f.done() for f in futures) >= 6)
        cluster.remove_node(victim, graceful=False)  # SIGKILL: no goodbye to the cluster
        answers = [f.result(timeout=180) for f in futures]
    assert len(answers) == sent  # every request answered, none hung
    for status, text in answers:
        assert status == 200 or (status == 503 and victim in text), (status, text)
    assert sum(status == 200 for status, _ in answers) >= sent // 2
    left = wait_for("the node's lanes to leave", lambda: victim not in nodes_of(gateway))
    assert left


def test_a_node_that_joins_gets_lanes_and_serves(
    cluster: LocalCluster, gateway: LiveServer
) -> None:
    before = {r["lane"] for r in lanes(gateway)}
    joined = cluster.add_node(cpus=2)

    def new_lanes() -> set[int]:
        rows = [r for r in lanes(gateway) if r["node"] == joined and r["state"] == "ready"]
        return {r["lane"] for r in rows} if len(rows) == 2 else set()

    added = wait_for("lanes on the new node", new_lanes, timeout_s=180)
    assert not added & before
    x = images(1, seed=3)
    with gateway.client() as client, ThreadPoolExecutor(4) as pool:
        for _ in range(30):  # several lanes busy at once: the new ones get work too
            answers = list(pool.map(lambda _: infer(client, x, "interactive"), range(4)))
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            if {a.json()["lane"] for a in answers} & added:
                break
        else:
            pytest.fail(f"no request ran on the new node's lanes {added}")


def nodes_of(live: LiveServer) -> set[str]:
    return {r["node"] for r in lanes(live)}
