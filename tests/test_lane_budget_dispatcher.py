"""Lane budgets through the dispatcher and the lane pool, on fake lanes that check what
they are told: a model is never evicted while a dispatch of it runs, a lane never holds
more than its budget, and it runs only models it holds. Three models, room for two."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest

from predictor.online import OnlineServiceTime, ResidualCorrection
from scheduling.config import SchedulerConfig
from scheduling.job import Job
from scheduling.scheduler import Scheduler
from server.dispatcher import Dispatcher
from server.lanes.base import LaneBatch, LaneError, LaneResult, RunnerKey, RunnerSpec, WorkerSpec
from server.lanes.pool import LaneWorkers
from server.lanes.runners import split_outputs
from server.metrics import GatewayMetrics
from server.service_times import ServiceTimes
from server.stats import SlidingWindowStats
from workloads.registry import Workload, get_workload

MODELS = ("a", "b", "c")
MB = 100
BUDGET = 250  # two of the three
_ids = itertools.count()


def runner(name: str) -> RunnerSpec:
    tiny = get_workload("tiny")
    spec = dataclasses.replace(tiny.spec, name=name)
    return RunnerSpec(Workload(spec), "onnx", "fp32", max_samples=8)


class FakeLane:
    """Holds runners by key; records every breach of the rules instead of raising, so
    the test sees all of them."""

    kind = "fake"

    def __init__(self, index: int, runners: tuple[RunnerSpec, ...]) -> None:
        self.index = index
        self.spec = WorkerSpec(lane=index, runners=runners, threads=1)
        self.ready = True
        self.running: int | None = None
        self.restarts = 0
        self.error: str | None = None
        self.pid = None
        self.held: set[RunnerKey] = {r.key for r in runners}
        self.in_use: set[RunnerKey] = set()
        self.breaches: list[str] = []
        self.loads: list[RunnerKey] = []
        self.fail_loads: set[str] = set()

    async def start(self) -> None: ...

    async def load(self, runners: tuple[RunnerSpec, ...]) -> None:
        await asyncio.sleep(0.002)  # loading takes a moment: other dispatches interleave
        for r in runners:
            if r.name in self.fail_loads:
                raise LaneError(f"lane {self.index} failed to load {r.name}: out of memory")
            self.held.add(r.key)
            self.loads.append(r.key)
        if len(self.held) * MB > BUDGET:
            self.breaches.append(f"lane {self.index} holds {sorted(self.held)}: over budget")

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        for key in keys:
            if key in self.in_use:
                self.breaches.append(f"lane {self.index} evicted {key} while running it")
            self.held.discard(key)

    async def run(self, batch: LaneBatch) -> LaneResult:
        if batch.key not in self.held:
            self.breaches.append(f"lane {self.index} ran {batch.key} without holding it")
        if self.in_use:
            self.breaches.append(f"lane {self.index} ran two dispatches at once")
        self.in_use.add(batch.key)
        try:
            await asyncio.sleep(0.001)
            rows = np.zeros((batch.samples, 10), dtype=np.float32)
            return LaneResult(split_outputs(rows, batch.counts), 0.001)
        finally:
            self.in_use.discard(batch.key)

    async def abort(self, reason: str) -> None: ...

    async def close(self) -> None: ...


def make(lanes: int) -> tuple[Dispatcher, list[FakeLane]]:
    tokens = {"capacity": 5000, "lane_budget": BUDGET}
    config = SchedulerConfig(
        policy="fifo",
        lanes=lanes,
        tokens=tokens,
        microbatch={"enabled": False},  # type: ignore[arg-type]
    )
    scheduler = Scheduler(config, dict.fromkeys(MODELS, MB))
    runners = [runner(name) for name in MODELS]
    fakes = []
    for lane in range(lanes):
        held = set(scheduler.preload(lane, [r.key for r in runners], 0.0))
        fakes.append(FakeLane(lane, tuple(r for r in runners if r.key in held)))
    pool = LaneWorkers(fakes, catalogue={r.key: r for r in runners})  # type: ignore[arg-type]
    pool._started = True
    service = ServiceTimes({"default": ResidualCorrection(OnlineServiceTime())})
    metrics = GatewayMetrics()
    for name in MODELS:
        metrics.register_model(name)
    return Dispatcher(scheduler, pool, metrics, SlidingWindowStats(60), service), fakes


def job(model: str, samples: int = 1) -> Job:
    return Job(next(_ids), model, "onnx", "fp32", "batch", samples, 0.0, 60.0)


def metric(d: Dispatcher, name: str, model: str) -> float:
    value = d.metrics.registry.get_sample_value(name, {"model": model})
    return value or 0.0


async def alternate(lanes: int, rounds: int) -> tuple[Dispatcher, list[FakeLane], list[Any]]:
    d, fakes = make(lanes)
    d.start()
    try:
        futures = []
        for i in range(rounds):
            for model in MODELS:
                futures.append(d.submit(job(model, samples=1 + i % 3)))
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await d.close()
    return d, fakes, results


@pytest.mark.parametrize(("lanes", "least_loads", "most_loads"), [(1, 30, 90), (2, 0, 0)])
def test_an_alternating_stream_over_three_models_swaps_and_breaks_no_rule(
    lanes: int, least_loads: int, most_loads: int
) -> None:
    # One lane swaps all the time; two lanes hold all three between them from the start
    # (filled in turn), and the core sends each dispatch to a lane that holds its model.
    d, fakes, results = asyncio.run(alternate(lanes=lanes, rounds=30))
    assert all(not isinstance(r, BaseException) for r in results), results
    assert [b for f in fakes for b in f.breaches] == []
    loads = sum(metric(d, "mlws_model_loads_total", m) for m in MODELS)
    evictions = sum(metric(d, "mlws_model_evictions_total", m) for m in MODELS)
    assert loads == sum(len(f.loads) for f in fakes)
    assert least_loads <= loads <= most_loads
    assert evictions == loads  # each lane was full: every load evicted one model
    assert loads == d.scheduler.swaps.loads
    # What the core believes each lane holds is what the lane holds.
    for fake in fakes:
        assert set(d.scheduler.lane_models(fake.index) or []) == fake.held


def test_a_failed_load_fails_its_requests_and_the_lane_is_not_believed_to_hold_it() -> None:
    async def scenario() -> tuple[Dispatcher, list[FakeLane], list[Any]]:
        d, fakes = make(lanes=1)  # holds a and b
        fakes[0].fail_loads.add("c")
        d.start()
        try:
            first = await asyncio.gather(d.submit(job("c")), return_exceptions=True)
            later = await asyncio.gather(d.submit(job("a")), return_exceptions=True)
        finally:
            await d.close()
        return d, fakes, [*first, *later]

    d, fakes, (failed, ok) = asyncio.run(scenario())
    assert "failed to load c: out of memory" in str(getattr(failed, "error", failed))
    assert not isinstance(ok, BaseException)
    assert ("c", "onnx", "fp32") not in (d.scheduler.lane_models(0) or [])
    assert [b for b in fakes[0].breaches] == []
