"""Ray lanes on a real Ray cluster of three nodes on this machine (`ray.cluster_utils`).

One cluster for the module (starting Ray takes seconds): a head with 1 CPU and two
worker nodes with 2 each, every address on loopback. The lanes run directly first
(pinned to nodes, an actor killed and restarted, a node that leaves), then behind a
real gateway whose lanes Ray spreads over the nodes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray

from backends.base import LoadOptions
from backends.registry import load_runner
from server.lanes.base import (
    LaneBatch,
    LaneError,
    LaneResult,
    NodeLost,
    RunnerSpec,
    WorkerDied,
    WorkerSpec,
)
from server.lanes.model_files import gather, install
from server.lanes.ray_cluster import alive_nodes
from server.lanes.ray_lane import PUT_BYTES, RayLane
from server.lanes.runners import RunnerSet
from tests.gateway_fixtures import LiveServer, b64_inputs, pid_alive, tiny_config
from tests.onnx_models import write_mlp
from tests.ray_fixtures import LocalCluster, local_cluster
from workloads.registry import get_workload, onnx_file_workload

KEY = ("tiny", "onnx", "fp32")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    with local_cluster(head_cpus=1, worker_cpus=[2, 2]) as started:
        yield started


@pytest.fixture(scope="module")
def spec(onnx_dir: Path) -> WorkerSpec:
    return WorkerSpec(
        lane=0,
        runners=(RunnerSpec(get_workload("tiny"), "onnx", "fp32", 4),),
        threads=1,
        onnx_dir=str(onnx_dir),
    )


@pytest.fixture(scope="module")
def here(spec: WorkerSpec) -> Iterator[RunnerSet]:
    """The same runners in this process (loading them exports tiny for the actors)."""
    runners = RunnerSet(spec)
    runners.load_all()
    yield runners
    runners.close()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32), dtype=np.float32)


def mixed_batch(dispatch_id: int = 1) -> LaneBatch:
    """Two real parts around a synthetic one (the actor fills that one itself)."""
    x = images(4, seed=3)
    return LaneBatch(dispatch_id, KEY, [(x, 1, 2), (None, 0, 1), (x, 0, 1)])


def big_batch() -> LaneBatch:
    """Real rows past Ray's inline limit (12 × 12 KiB): they go through the object store."""
    assert PUT_BYTES < 12 * 3 * 32 * 32 * 4
    return LaneBatch(2, KEY, [(images(12, seed=5), 0, 12), (None, 0, 2)])


def expected_outputs(here: RunnerSet, batch: LaneBatch) -> np.ndarray:
    return here.run(batch.key, here.assemble(batch.key[0], batch.parts))


def assert_same(
    result: LaneResult, expected: np.ndarray, counts: tuple[int, ...] = (2, 1, 1)
) -> None:
    assert tuple(len(o) for o in result.outputs) == counts
    outputs = np.concatenate(result.outputs)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert (outputs.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_lanes_pinned_to_two_nodes_serve_like_the_runners_here(
    ray_cluster: LocalCluster, spec: WorkerSpec, here: RunnerSet
) -> None:
    batch, big = mixed_batch(), big_batch()
    expected, expected_big = expected_outputs(here, batch), expected_outputs(here, big)

    async def main() -> list[tuple[str | None, int | None, LaneResult]]:
        # The second lane at low priority, as a batch lane: its actor runs under SCHED_IDLE.
        lanes = [
            RayLane(dataclasses.replace(spec, lane=i, priority=priority), node_wanted=node)
            for i, (node, priority) in enumerate(
                zip(ray_cluster.workers, ["normal", "low"], strict=True)
            )
        ]
        try:
            await asyncio.gather(*(lane.start() for lane in lanes))
            assert all(lane.ready and lane.running is None for lane in lanes)
            policies = [os.sched_getscheduler(lane.pid or 0) for lane in lanes]
            assert policies == [os.SCHED_OTHER, os.SCHED_IDLE]
            assert_same(await lanes[0].run(big), expected_big, (12, 2))
            return [(lane.node, lane.pid, await lane.run(batch)) for lane in lanes]
        finally:
            await asyncio.gather(*(lane.close() for lane in lanes))

    results = asyncio.run(main())
    assert [node for node, _, _ in results] == ray_cluster.workers
    assert all(pid is not None and pid != os.getpid() for _, pid, _ in results)
    for _, _, result in results:
        assert result.service_s > 0
        assert_same(result, expected)


def test_an_actor_killed_is_restarted_on_its_node(
    ray_cluster: LocalCluster, spec: WorkerSpec, here: RunnerSet
) -> None:
    batch = mixed_batch()
    expected = expected_outputs(here, batch)
    node = ray_cluster.workers[0]

    async def main() -> None:
        lane = RayLane(spec, node_wanted=node)
        try:
            await lane.start()
            first = lane.pid
            assert first is not None
            ray.kill(lane._actor)
            await wait_gone(first)
            with pytest.raises(WorkerDied, match=f"lane 0 \\(pid {first}\\) died"):
                await lane.run(batch)
            assert_same(await lane.run(batch), expected)  # waits for the restart
            assert lane.restarts == 1 and lane.ready and lane.node == node
            assert lane.pid != first
            await lane.abort("test: stuck")  # the watchdog's call: a fresh actor
            assert not lane.ready and lane.restarts == 2
            assert_same(await lane.run(batch), expected)
            assert lane.ready and lane.node == node
        finally:
            await lane.close()

    asyncio.run(main())


def test_an_actor_loads_and_unloads_a_runner_and_restarts_with_them(
    ray_cluster: LocalCluster, spec: WorkerSpec, tmp_path: Path
) -> None:
    mlp = RunnerSpec(onnx_file_workload(write_mlp(tmp_path / "mlp.onnx"), "mlp"), "onnx", "fp32", 4)
    x = np.ones((3, 8), dtype=np.float32)

    def rows(key: tuple[str, str, str]) -> LaneBatch:
        return LaneBatch(1, key, [(x, 0, 3)])

    async def main() -> None:
        lane = RayLane(spec, node_wanted=ray_cluster.workers[0])
        try:
            await lane.start()
            await lane.load((mlp,))
            assert (await lane.run(rows(mlp.key))).outputs[0].shape == (3, 4)
            await lane.unload((KEY,))
            first = lane.pid
            assert first is not None
            ray.kill(lane._actor)  # the restarted actor loads what the lane has now
            await wait_gone(first)
            with pytest.raises(WorkerDied):
                await lane.run(rows(mlp.key))
            assert (await lane.run(rows(mlp.key))).outputs[0].shape == (3, 4)
            assert [r.key for r in lane.spec.runners] == [mlp.key]
            await lane.unload((mlp.key,))
            with pytest.raises(LaneError, match="no runner"):
                await lane.run(rows(mlp.key))
        finally:
            await lane.close()

    asyncio.run(main())


@pytest.mark.parametrize("graceful", [True, False], ids=["removed", "killed"])
def test_a_lane_whose_node_leaves_is_lost_naming_the_node(
    ray_cluster: LocalCluster, spec: WorkerSpec, graceful: bool
) -> None:
    """Removed: Ray marks the node dead at once. Killed (its processes and the actor's
    SIGKILLed, as when a machine dies): Ray's health checks take ~15 s to say so, but
    the actor is unreachable within seconds."""
    extra = ray_cluster.add_node(cpus=1)

    async def main() -> None:
        lane = RayLane(spec, node_wanted=extra)
        try:
            await lane.start()
            assert lane.node == extra
            ray_cluster.remove_node(extra, graceful)
            if graceful:
                assert extra not in alive_nodes()
            else:  # a worker outlives its raylet for a moment; a dead machine's does not
                assert lane.pid is not None
                os.kill(lane.pid, signal.SIGKILL)
                await wait_gone(lane.pid)
            for _ in range(2):  # and for good: no restart on a node that left
                with pytest.raises(NodeLost, match=f"node {extra} left the cluster") as e:
                    await lane.run(mixed_batch())
                assert e.value.node == extra and not lane.ready
            assert lane.restarts == 0
        finally:
            await lane.close()

    asyncio.run(main())
    assert set(ray_cluster.workers) <= set(alive_nodes())


def test_a_lane_no_node_has_room_for_fails_at_once(
    ray_cluster: LocalCluster, spec: WorkerSpec
) -> None:
    """Ray would keep such an actor pending for ever; the lane says why instead."""
    wide = dataclasses.replace(spec, threads=64)
    pinned = RayLane(spec, node_wanted=ray_cluster.workers[0], resources={"mlws-gpu-box": 1})
    for lane in (RayLane(wide), pinned):
        with pytest.raises(LaneError, match="the resources a lane asks for"):
            asyncio.run(lane.start())
        assert not lane.ready and lane.error is not None and lane.restarts == 0


def test_model_files_reach_a_node_that_lacks_them(
    ray_cluster: LocalCluster, spec: WorkerSpec, here: RunnerSet, tmp_path: Path
) -> None:
    """Every node here shares the gateway's disk, so a node without the files is played
    by other paths: the exported model (and its fingerprint) land where the runner looks;
    a user's ONNX file goes into the onnx_dir, and the runner is pointed at it."""
    files = gather(spec)  # `here` exported tiny
    assert sorted(Path(f.path).name for f in files) == ["tiny.onnx", "tiny.onnx.json"]
    assert gather(spec) == files  # put into the object store once
    assert install(spec, files) == spec  # already there: nothing written
    elsewhere = [
        dataclasses.replace(f, path=str(tmp_path / "node" / Path(f.path).name)) for f in files
    ]
    assert install(spec, tuple(elsewhere)) == spec
    for f, copy in zip(files, elsewhere, strict=True):
        assert Path(copy.path).read_bytes() == Path(f.path).read_bytes()

    workload = onnx_file_workload(write_mlp(tmp_path / "mlp.onnx"), "mlp")
    onnx_dir = str(tmp_path / "d")
    (shipped,) = gather(WorkerSpec(0, (RunnerSpec(workload, "onnx", "fp32", 4),), 1))
    missing = str(tmp_path / "not-on-this-node.onnx")
    there = dataclasses.replace(workload, onnx_file=Path(missing))  # the gateway's path
    lacking = WorkerSpec(0, (RunnerSpec(there, "onnx", "fp32", 4),), 1, onnx_dir=onnx_dir)
    installed = install(lacking, (dataclasses.replace(shipped, path=missing),))
    moved = installed.runners[0].workload.onnx_file
    assert moved is not None and moved.parent == tmp_path / "d" / "files"
    assert moved.read_bytes() == (tmp_path / "mlp.onnx").read_bytes()


async def wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"actor pid {pid} still alive"
        await asyncio.sleep(0.05)


def test_a_gateway_on_ray_lanes_serves_like_the_backend(
    ray_cluster: LocalCluster, onnx_dir: Path
) -> None:
    lanes = {
        "count": 2,
        "kind": "ray",
        "threads_per_lane": 1,
        "ray": {"address": ray_cluster.address},
    }
    # A window long enough that concurrent batch requests share dispatches.
    scheduler = {"microbatch": {"window_ms": 300, "max_batch": 32}}
    config = tiny_config(onnx_dir, lanes=lanes, scheduler=scheduler)
    runner = load_runner("tiny", "onnx", LoadOptions(onnx_dir=onnx_dir, threads=1))
    with LiveServer(config) as server, server.client() as client:
        rows = client.get("/v1/lanes").json()["lanes"]
        assert [row["kind"] for row in rows] == ["ray", "ray"]
        assert all(row["ready"] and row["pid"] != os.getpid() for row in rows)
        x = images(3, seed=1)
        body = {"model": "tiny", "class": "interactive", "inputs": b64_inputs(x)}
        assert top1(client.post("/infer", json=body)) == runner.run(x).argmax(axis=1).tolist()

        def batch_request(seed: int) -> tuple[httpx.Response, np.ndarray]:
            x = images(2, seed=seed)
            body = {"model": "tiny", "class": "batch", "inputs": b64_inputs(x)}
            return client.post("/infer", json=body), x

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(batch_request, range(10, 16)))
    for response, x in answers:
        assert top1(response) == runner.run(x).argmax(axis=1).tolist()
    assert max(r.json()["batch_size"] for r, _ in answers) > 2  # shared micro-batches


def top1(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [row[0]["index"] for row in response.json()["outputs"]]
