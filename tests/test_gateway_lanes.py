"""Lane internals without HTTP: batch assembly, output split, shared memory, parallel
loads, and a process lane's worker run directly."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from server.lanes.base import LaneBatch, LaneError, RunnerSpec, WorkerSpec
from server.lanes.process_lane import ProcessLane
from server.lanes.runners import RunnerSet, split_outputs, write_rows
from server.lanes.shm import AttachedBlocks, ShmBlock
from tests.onnx_models import write_mlp
from workloads.registry import Workload, get_workload, onnx_file_workload


def worker_spec(
    onnx_dir: Path, backend: str = "onnx", lane: int = 0, workload: Workload | None = None
) -> WorkerSpec:
    runner = RunnerSpec(workload or get_workload("tiny"), backend, "fp32", 4)
    return WorkerSpec(lane=lane, runners=(runner,), threads=1, onnx_dir=str(onnx_dir))


def test_write_rows_places_real_parts_and_reports_synthetic_ones() -> None:
    a = np.arange(12, dtype=np.float32).reshape(6, 2)
    out = np.full((5, 2), -1, dtype=np.float32)
    synthetic = write_rows([(a, 2, 2), (None, 0, 1), (a, 0, 2)], out)
    assert synthetic == [(2, 1)]
    np.testing.assert_array_equal(out[:2], a[2:4])
    np.testing.assert_array_equal(out[3:], a[:2])
    assert (out[2] == -1).all()


def test_split_outputs_are_views_in_dispatch_order() -> None:
    out = np.arange(10).reshape(5, 2)
    parts = split_outputs(out, [2, 0, 3])
    assert [p.shape[0] for p in parts] == [2, 0, 3] and np.shares_memory(parts[2], out)


def test_runner_set_assembles_without_copies_when_it_can(onnx_dir: Path) -> None:
    runners = RunnerSet(worker_spec(onnx_dir))
    x = np.ones((3, 3, 32, 32), dtype=np.float32)
    view = runners.assemble("tiny", [(x, 1, 2)])
    assert np.shares_memory(view, x) and view.shape[0] == 2
    synthetic = runners.assemble("tiny", [(None, 0, 2), (None, 0, 1)])
    assert synthetic.shape == (3, 3, 32, 32)
    mixed = runners.assemble("tiny", [(x, 0, 1), (None, 0, 2)])
    np.testing.assert_array_equal(mixed[0], x[0])
    np.testing.assert_array_equal(mixed[1:], runners.synthetic("tiny", 2))


def test_runner_set_checks_its_runners(onnx_dir: Path) -> None:
    runners = RunnerSet(worker_spec(onnx_dir))
    with pytest.raises(LaneError, match="no runner"):
        runners.run(("tiny", "onnx", "fp32"), np.zeros((1, 3, 32, 32), np.float32))


def test_thread_lanes_loading_at_once_get_identical_weights(onnx_dir: Path) -> None:
    # Model building draws from torch's global RNG: parallel loads must not interleave.
    # Eight at once: without the lock, most runs of this test see different weights.
    sets = [RunnerSet(worker_spec(onnx_dir, "pytorch", lane)) for lane in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(RunnerSet.load_all, sets))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    outs = [s.run(("tiny", "pytorch", "fp32"), x) for s in sets]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_shm_blocks_grow_under_a_new_name_and_unlink() -> None:
    block = ShmBlock(64)
    first = block.name
    block.array((4, 4))[:] = 1.0
    block.ensure(32)
    assert block.name == first
    block.ensure(1000)
    assert block.name != first and block.size >= 1000
    assert not Path("/dev/shm", first).exists()
    worker = AttachedBlocks()
    view = worker.array(block.name, (10,))
    view[:] = 7.0
    np.testing.assert_array_equal(block.array((10,)), np.full(10, 7.0, np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        worker.array(block.name, (10_000,))
    del view
    worker.close()
    block.close()
    assert not Path("/dev/shm", block.name).exists()


def test_a_user_onnx_file_runs_from_its_workload_without_registering(tmp_path: Path) -> None:
    workload = onnx_file_workload(write_mlp(tmp_path / "mlp.onnx"), "unregistered_mlp")
    runners = RunnerSet(worker_spec(tmp_path, workload=workload))
    runners.load_all()
    try:
        out = runners.run(("unregistered_mlp", "onnx", "fp32"), np.ones((3, 8), np.float32))
    finally:
        runners.close()
    assert out.shape == (3, 4)
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("unregistered_mlp")  # the worker registered nothing


def test_a_process_lane_answers_as_its_runners_do(onnx_dir: Path) -> None:
    """Real rows, synthetic rows and a split output go through the worker's messages
    and shared memory and come back as the same rows a RunnerSet computes here."""
    spec = worker_spec(onnx_dir)
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)
    batch = LaneBatch(7, ("tiny", "onnx", "fp32"), [(x, 1, 2), (None, 0, 1), (x, 0, 1)])

    async def main() -> list[np.ndarray]:
        lane = ProcessLane(spec, start_timeout_s=120)
        try:
            await lane.start()
            assert lane.ready and lane.pid is not None and lane.running is None
            result = await lane.run(batch)
            assert lane.running is None and result.service_s > 0
            return result.outputs
        finally:
            await lane.close()

    outputs = asyncio.run(main())
    here = RunnerSet(spec)
    here.load_all()
    try:
        expected = here.run(batch.key, here.assemble("tiny", batch.parts))
    finally:
        here.close()
    assert [len(o) for o in outputs] == [2, 1, 1]
    np.testing.assert_allclose(np.concatenate(outputs), expected, rtol=1e-5, atol=1e-5)
