"""Lanes load and unload runners at run time: thread and process lanes, without HTTP.

A lane keeps serving the runners it had while it loads another, a failed load
leaves it as it was, and a worker restarted afterwards comes back with the runners
it had at that time (its spec follows loads and unloads).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from server.lanes.base import Lane, LaneBatch, LaneError, RunnerSpec, WorkerSpec
from server.lanes.process_lane import ProcessLane
from server.lanes.thread_lane import ThreadLane
from tests.onnx_models import write_mlp, write_unloadable
from workloads.registry import get_workload, onnx_file_workload

TINY = ("tiny", "onnx", "fp32")
MLP = ("mlp", "onnx", "fp32")


def tiny_spec(onnx_dir: Path) -> WorkerSpec:
    runner = RunnerSpec(get_workload("tiny"), "onnx", "fp32", 4)
    return WorkerSpec(lane=0, runners=(runner,), threads=1, onnx_dir=str(onnx_dir))


def mlp_runner(path: Path, name: str = "mlp") -> RunnerSpec:
    return RunnerSpec(onnx_file_workload(path, name), "onnx", "fp32", 4)


async def run(lane: Lane, key: tuple[str, str, str], rows: np.ndarray) -> np.ndarray:
    result = await lane.run(LaneBatch(1, key, [(rows, 0, len(rows))]))
    return result.outputs[0]


def make_lane(kind: str, spec: WorkerSpec) -> Lane:
    return ProcessLane(spec) if kind == "process" else ThreadLane(spec)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_lane_loads_replaces_and_unloads_a_runner(
    kind: str, onnx_dir: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        lane = make_lane(kind, tiny_spec(onnx_dir))
        await lane.start()
        try:
            x = np.ones((3, 8), dtype=np.float32)
            with pytest.raises(LaneError, match="no runner"):
                await run(lane, MLP, x)
            await lane.load((mlp_runner(write_mlp(tmp_path / "mlp.onnx")),))
            assert (await run(lane, MLP, x)).shape == (3, 4)
            assert [r.key for r in lane.spec.runners] == [TINY, MLP]
            # A failed load keeps what the lane had.
            with pytest.raises(LaneError, match="failed to load mlp/onnx/fp32"):
                bad = write_unloadable(tmp_path / "bad.onnx")
                await lane.load((RunnerSpec(onnx_file_workload(bad, "mlp"), "onnx", "fp32", 4),))
            assert (await run(lane, MLP, x)).shape == (3, 4)
            await lane.unload((MLP,))
            assert [r.key for r in lane.spec.runners] == [TINY]
            with pytest.raises(LaneError, match="no runner"):
                await run(lane, MLP, x)
            tiny = np.zeros((1, 3, 32, 32), dtype=np.float32)
            assert (await run(lane, TINY, tiny)).shape[0] == 1
        finally:
            await lane.close()

    asyncio.run(scenario())


def test_a_restarted_worker_comes_back_with_the_runners_of_that_time(
    onnx_dir: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        lane = ProcessLane(tiny_spec(onnx_dir))
        await lane.start()
        try:
            await lane.load((mlp_runner(write_mlp(tmp_path / "mlp.onnx")),))
            await lane.unload((TINY,))
            pid = lane.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            # The next run waits for the restart (or fails with the death, then restarts).
            x = np.ones((2, 8), dtype=np.float32)
            for _ in range(2):
                try:
                    out = await run(lane, MLP, x)
                    break
                except LaneError:
                    continue
            assert out.shape == (2, 4) and lane.pid != pid and lane.restarts >= 1
            with pytest.raises(LaneError, match="no runner"):
                await run(lane, TINY, np.zeros((1, 3, 32, 32), dtype=np.float32))
        finally:
            await lane.close()

    asyncio.run(scenario())
