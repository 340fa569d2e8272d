"""The dispatcher on a fake lane pool: every job ends exactly once, whatever the lanes do.

No HTTP and no model: a `FakePool` answers each dispatch with the first input
value of each row (or fails on demand), so outputs can be traced back to inputs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from predictor.online import OnlineServiceTime, ResidualCorrection
from scheduling.config import SchedulerConfig
from scheduling.errors import NoLane, QueueFull
from scheduling.job import Job
from scheduling.scheduler import Scheduler
from server.dispatcher import Dispatcher, JobResult
from server.errors import Unavailable
from server.lanes.base import LaneBatch, LaneError, LaneResult, NodeLost
from server.lanes.runners import split_outputs, write_rows
from server.metrics import GatewayMetrics
from server.service_times import ServiceTimes
from server.stats import SlidingWindowStats

_ids = itertools.count()


class FakePool:
    """Runs a dispatch by echoing each row's first value; `hook` may fail or delay it."""

    def __init__(self, hook: Callable[[LaneBatch], Any] | None = None) -> None:
        self.batches: list[LaneBatch] = []
        #: The lane each batch ran on, in order.
        self.lanes: list[int] = []
        self.hook = hook
        self.gate: asyncio.Event | None = None
        self.retired: set[int] = set()

    def retire(self, lane: int) -> bool:
        if lane in self.retired:
            return False
        self.retired.add(lane)
        return True

    async def run(self, lane: int, batch: LaneBatch) -> LaneResult:
        self.batches.append(batch)
        self.lanes.append(lane)
        if self.gate is not None:
            await self.gate.wait()
        if self.hook is not None:
            result = self.hook(batch)
            if result is not None:
                return result
        rows = np.zeros((batch.samples, 4), dtype=np.float32)
        write_rows(batch.parts, rows)
        outputs = rows[:, :1].copy()
        return LaneResult(split_outputs(outputs, [c for _, _, c in batch.parts]), 0.001)


def make(pool: FakePool, **knobs: Any) -> Dispatcher:
    config = SchedulerConfig(**knobs)
    scheduler = Scheduler(config, {"m": 10})
    service = ServiceTimes({"default": ResidualCorrection(OnlineServiceTime())})
    return Dispatcher(scheduler, pool, GatewayMetrics(), SlidingWindowStats(60), service)  # type: ignore[arg-type]


def job(samples: int = 1, job_class: str = "interactive", payload: Any = None) -> Job:
    now = 0.0
    return Job(
        id=next(_ids),
        workload="m",
        backend="onnx",
        precision="fp32",
        job_class=job_class,  # type: ignore[arg-type]
        samples=samples,
        arrival=now,
        deadline=now + 1e6,
        payload=payload,
    )


def rows(n: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n, dtype=np.float32)[:, None] + start) * np.ones((1, 4), np.float32)


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=30))


def test_a_split_job_is_reassembled_in_order() -> None:
    async def main() -> JobResult:
        d = make(FakePool(), lanes=2, max_dispatch_samples=4)
        d.start()
        result = await d.submit(job(10, payload=rows(10)))
        await d.close()
        return result

    result = run(main)
    assert result.job.outcome == "ok" and result.outputs is not None
    np.testing.assert_array_equal(result.outputs[:, 0], np.arange(10, dtype=np.float32))


def test_each_dispatch_is_observed_once_by_its_lane_groups_model() -> None:
    async def main() -> Dispatcher:
        d = make(FakePool(), lanes=2, max_dispatch_samples=4)
        d.start()
        await d.submit(job(10, payload=rows(10)))
        await d.close()
        return d

    model = run(main).service_times["default"]
    assert model.version == 3  # parts of 4, 4 and 2 samples: three observations
    assert model.residual("m", "onnx", "fp32", 4).count == 2  # type: ignore[union-attr]


def test_batch_jobs_share_a_dispatch_and_get_their_own_rows() -> None:
    async def main() -> tuple[list[JobResult], FakePool]:
        pool = FakePool()
        d = make(pool, lanes=1, microbatch={"window_ms": 20})
        d.start()
        futures = [d.submit(job(2, "batch", payload=rows(2, 10 * i))) for i in range(3)]
        results = await asyncio.gather(*futures)
        await d.close()
        return results, pool

    results, pool = run(main)
    assert len(pool.batches) == 1 and pool.batches[0].samples == 6
    for i, r in enumerate(results):
        assert r.batch_size == 6
        np.testing.assert_array_equal(r.outputs[:, 0], [10 * i, 10 * i + 1])  # type: ignore[index]


def test_a_failed_dispatch_fails_every_job_in_it_and_frees_the_core() -> None:
    def boom(batch: LaneBatch) -> None:
        raise LaneError("worker process of lane 0 was killed by SIGKILL")

    async def main() -> tuple[list[JobResult], Dispatcher]:
        d = make(FakePool(boom), lanes=1, microbatch={"window_ms": 20})
        d.start()
        futures = [d.submit(job(2, "batch")) for _ in range(3)]
        results = await asyncio.gather(*futures)
        await d.close()
        return results, d

    results, d = run(main)
    assert [r.job.outcome for r in results] == ["error"] * 3
    assert all("SIGKILL" in (r.job.error or "") for r in results)
    assert d.scheduler.in_flight == 0 and d.scheduler.tokens_in_use == 0 and d.waiting == 0


def test_an_output_of_the_wrong_length_fails_the_dispatch() -> None:
    def short(batch: LaneBatch) -> LaneResult:
        return LaneResult([np.zeros((1, 1), np.float32) for _ in batch.parts], 0.001)

    async def main() -> JobResult:
        d = make(FakePool(short), lanes=1)
        d.start()
        result = await d.submit(job(3))
        await d.close()
        return result

    result = run(main)
    assert result.job.outcome == "error" and "output rows [1]" in (result.job.error or "")


def test_cancel_drops_a_queued_job_and_counts_it() -> None:
    async def main() -> tuple[Dispatcher, asyncio.Future[JobResult]]:
        pool = FakePool()
        pool.gate = asyncio.Event()  # hold the only lane so the second job stays queued
        d = make(pool, lanes=1)
        d.start()
        first = d.submit(job())
        await asyncio.sleep(0)
        second_job = job()
        second = d.submit(second_job)
        await asyncio.sleep(0)
        d.cancel(second_job)
        assert d.scheduler.pending == 0
        pool.gate.set()
        await first
        await d.close()
        return d, second

    d, second = run(main)
    assert second.cancelled()
    outcomes = d.stats.summary(d.clock())["classes"]["interactive"]["outcomes"]
    assert outcomes["cancelled"] == 1 and outcomes["ok"] == 1


def test_queue_full_is_raised_and_recorded_as_rejected() -> None:
    async def main() -> Dispatcher:
        pool = FakePool()
        pool.gate = asyncio.Event()
        d = make(pool, lanes=1, queue_limit={"interactive": 1})
        d.start()
        first = d.submit(job())
        await asyncio.sleep(0)  # the first is dispatched: the queue is empty again
        queued = d.submit(job())
        with pytest.raises(QueueFull):
            d.submit(job())
        pool.gate.set()
        await asyncio.gather(first, queued)
        await d.close()
        return d

    d = run(main)
    outcomes = d.stats.summary(d.clock())["classes"]["interactive"]["outcomes"]
    assert outcomes == {"ok": 2, "rejected": 1, "shed": 0, "cancelled": 0, "error": 0}


def test_drain_refuses_new_jobs_and_the_timeout_answers_the_rest() -> None:
    async def main() -> tuple[JobResult, JobResult]:
        pool = FakePool()
        pool.gate = asyncio.Event()  # never released: nothing finishes in time
        d = make(pool, lanes=1)
        d.start()
        running = d.submit(job())
        await asyncio.sleep(0)
        queued = d.submit(job())
        d.begin_drain(0.01)
        with pytest.raises(Unavailable):
            d.submit(job())
        results = await asyncio.gather(running, queued)
        await d.close()
        return results[0], results[1]

    running, queued = run(main)
    assert running.aborted and "drain timeout" in running.aborted
    assert queued.aborted and queued.job.outcome == "cancelled"


def test_a_dispatch_lost_with_its_node_is_retried_on_another_lane() -> None:
    lost: list[int] = []

    def lose_first(batch: LaneBatch) -> None:
        if not lost:
            lost.append(batch.dispatch_id)
            raise NodeLost(0, "node-a")

    async def main() -> tuple[JobResult, Dispatcher, FakePool]:
        pool = FakePool(lose_first)
        d = make(pool, lanes=2)
        d.start()
        result = await d.submit(job(2, payload=rows(2, 5)))
        await d.close()
        return result, d, pool

    result, d, pool = run(main)
    assert result.job.outcome == "ok"
    np.testing.assert_array_equal(result.outputs[:, 0], [5, 6])  # type: ignore[index]
    assert pool.lanes == [0, 1] and pool.retired == {0}
    assert d.scheduler.live_lanes() == [1]
    families = d.metrics.render()[0].decode()
    assert 'mlws_lost_dispatches_total{node="node-a"} 1.0' in families


def test_a_dispatch_lost_twice_fails_with_the_node_named_and_no_lane_refuses() -> None:
    def always(batch: LaneBatch) -> None:
        raise NodeLost(batch.dispatch_id, f"node-{batch.dispatch_id}")

    async def main() -> tuple[JobResult, Dispatcher]:
        d = make(FakePool(always), lanes=2)
        d.start()
        result = await d.submit(job())
        with pytest.raises(NoLane):  # both lanes left with their nodes
            d.submit(job())
        await d.close()
        return result, d

    result, d = run(main)
    assert result.job.outcome == "error"
    assert "node node-1 left the cluster" in (result.job.error or "")
    assert d.scheduler.live_lanes() == [] and d.waiting == 0
