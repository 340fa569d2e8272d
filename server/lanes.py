"""Lanes: the workers that run dispatches, and what both kinds of worker share.

A lane owns loaded runners (one per model × backend × precision) with its own
intra-op thread count, and runs one dispatch at a time:

- `ThreadLane` (server/lanes_thread.py): a single-thread executor in the server
  process;
- `ProcessLane` (server/lanes_process.py): a spawned worker process; tensors go
  through shared memory, only small metadata through the pipe.

Both run the same worker-side code, `RunnerSet`: load and warm the runners,
assemble a dispatch's rows into one batch (never on the event loop), run it, and
check the output length. `LanePool` starts the lanes in the background after the
parent has exported every ONNX graph once, so workers never race on an export.

This module must stay importable without FastAPI or torch: spawned workers import it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from backends.base import LoadOptions, Runner
from scheduling.config import SchedulerConfig
from scheduling.tokens import max_samples_within

if TYPE_CHECKING:
    from server.config import GatewayConfig
    from workloads.specs import WorkloadSpec

log = logging.getLogger("mlws.lanes")

#: (workload, backend, precision): one loaded runner.
RunnerKey = tuple[str, str, str]


class LaneError(RuntimeError):
    """A dispatch could not run on its lane; the message says why (sent to clients)."""


class WorkerDied(LaneError):
    """The lane's worker process exited (crash, OOM kill, SIGKILL)."""


@dataclass(frozen=True)
class RunnerSpec:
    """One runner a worker loads: picklable, so it crosses to spawned workers."""

    workload: str
    backend: str
    precision: str
    #: Largest dispatch the scheduler can form for this group: the warm-up size.
    max_samples: int
    weights: str | None = None
    #: A user's ONNX file, registered under `workload` in the worker too.
    onnx_file: str | None = None
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()

    @property
    def key(self) -> RunnerKey:
        return (self.workload, self.backend, self.precision)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one lane's worker needs to load its runners."""

    lane: int
    runners: tuple[RunnerSpec, ...]
    threads: int
    device: str = "auto"
    seed: int = 0
    onnx_dir: str = "models/onnx"
    #: The lane group's name and OS priority ("normal", or "low": yields the CPU).
    group: str = "default"
    priority: str = "normal"

    def max_bytes(self, shape_of: str) -> int:
        """Bytes of the largest float32 input ("input") or output ("output") batch."""
        sizes = [
            r.max_samples * math.prod(r.input_shape if shape_of == "input" else r.output_shape)
            for r in self.runners
        ]
        return 4 * max(sizes, default=1)


@dataclass
class LaneBatch:
    """One dispatch as a lane sees it; built on the loop without copying any tensor."""

    dispatch_id: int
    key: RunnerKey
    #: Per part: (the job's whole input, or None for synthesized input; offset; count).
    parts: list[tuple[np.ndarray | None, int, int]]

    @property
    def samples(self) -> int:
        return sum(count for _, _, count in self.parts)


@dataclass
class LaneResult:
    """What a lane returns: one output array per part, and the measured run time."""

    outputs: list[np.ndarray]
    service_s: float


class Lane(Protocol):
    """A worker that loads its runners and runs one dispatch at a time."""

    index: int
    kind: str
    spec: WorkerSpec
    ready: bool
    busy: bool
    restarts: int
    error: str | None

    @property
    def pid(self) -> int | None:
        """The worker process id (process lanes), else None."""
        ...

    async def start(self) -> None:
        """Load and warm every runner; raises LaneError if that fails."""
        ...

    async def run(self, batch: LaneBatch) -> LaneResult:
        """Run one dispatch; raises LaneError (WorkerDied) if it cannot."""
        ...

    async def abort(self, reason: str) -> None:
        """Stop the dispatch in progress (the watchdog's call) and replace the worker."""
        ...

    async def close(self) -> None:
        """Stop the worker and release its resources."""
        ...


# ----------------------------------------------------------------- worker side
class RunnerSet:
    """A lane's loaded runners and synthetic inputs (runs in the lane's worker)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._runners: dict[RunnerKey, Runner] = {}
        self._max_batch: dict[RunnerKey, int | None] = {}
        self._synthetic: dict[str, np.ndarray] = {}

    def load_all(self) -> None:
        """Take the lane's OS priority, then load every runner and warm it at batch 1
        and at its largest dispatch.

        Runs on the thread that will run every dispatch of the lane (or the worker
        process's main thread), before any runner exists: threads a runtime starts
        for its intra-op pool inherit the priority.
        """
        from backends.registry import load_runner
        from workloads.registry import get_workload, register_onnx_file

        apply_priority(self.spec.priority, self.spec.lane)
        for r in self.spec.runners:
            if r.onnx_file is not None:
                register_onnx_file(r.onnx_file, r.workload)
            options = LoadOptions(
                precision=r.precision,
                device=self.spec.device,
                threads=self.spec.threads,
                seed=self.spec.seed,
                weights=r.weights,
                onnx_dir=self.spec.onnx_dir,
            )
            self._runners[r.key] = load_runner(r.workload, r.backend, options)
            self._max_batch[r.key] = get_workload(r.workload).max_batch
            for n in sorted({1, r.max_samples}):
                self.run(r.key, self.synthetic(r.workload, n))

    def synthetic(self, workload: str, samples: int) -> np.ndarray:
        """`samples` rows of a cached random input buffer (a view, no copy)."""
        buf = self._synthetic.get(workload)
        if buf is None or len(buf) < samples:
            spec = self._spec_of(workload)
            rows = max(samples, max(r.max_samples for r in self.spec.runners))
            rng = np.random.default_rng(self.spec.seed)
            buf = rng.standard_normal((rows, *spec.input_shape), dtype=np.float32)
            self._synthetic[workload] = buf
        return buf[:samples]

    def assemble(
        self, workload: str, parts: Sequence[tuple[np.ndarray | None, int, int]]
    ) -> np.ndarray:
        """The dispatch's rows as one batch; a view when no copy is needed."""
        n = sum(count for _, _, count in parts)
        if all(payload is None for payload, _, _ in parts):
            return self.synthetic(workload, n)
        if len(parts) == 1:
            payload, offset, count = parts[0]
            return payload[offset : offset + count]  # type: ignore[index]
        out = np.empty((n, *self._spec_of(workload).input_shape), dtype=np.float32)
        self.fill_synthetic(workload, out, write_rows(parts, out))
        return out

    def fill_synthetic(
        self, workload: str, out: np.ndarray, segments: Sequence[tuple[int, int]]
    ) -> None:
        """Fill rows [row, row + count) of `out` with synthetic input, per segment."""
        for row, count in segments:
            out[row : row + count] = self.synthetic(workload, count)

    def run(self, key: RunnerKey, batch: np.ndarray) -> np.ndarray:
        """Run one batch and check that one output row came back per input row."""
        runner = self._runners.get(key)
        if runner is None:
            raise LaneError(f"lane {self.spec.lane} has no runner for {'/'.join(key)}")
        if self._max_batch.get(key) == 1 and len(batch) > 1:
            # A fixed-batch ONNX file: run sample by sample.
            outputs = np.concatenate([runner.run(batch[i : i + 1]) for i in range(len(batch))])
        else:
            outputs = runner.run(batch)
        if outputs.ndim < 1 or outputs.shape[0] != batch.shape[0]:
            raise LaneError(
                f"model {key[0]} returned {outputs.shape[0] if outputs.ndim else 0} output rows "
                f"for a batch of {batch.shape[0]}"
            )
        return outputs

    def interrupt(self) -> None:
        """Ask every runner that can (ONNX Runtime) to stop its run in progress."""
        for runner in self._runners.values():
            stop = getattr(runner, "interrupt", None)
            if stop is not None:
                stop()

    def close(self) -> None:
        """Release every runner."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()

    def input_shape(self, workload: str) -> tuple[int, ...]:
        """Shape of one input sample of `workload`."""
        return self._spec_of(workload).input_shape

    def _spec_of(self, workload: str) -> RunnerSpec:
        return next(r for r in self.spec.runners if r.workload == workload)


def apply_priority(priority: str, lane: int) -> None:
    """Give the calling thread the lane's OS scheduling priority.

    "low": SCHED_IDLE on Linux (nice 19 elsewhere): the thread runs only on CPU
    time no normal-priority thread wants, and is preempted at once when one
    wakes up (an interactive lane, the event loop). An unprivileged thread may
    always lower its own priority, never raise it back, so lanes keep theirs.
    """
    if priority != "low":
        return
    import os

    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
        else:
            os.nice(19)
    except OSError as exc:
        log.warning("lane %d: cannot lower its priority (%s); it competes as normal", lane, exc)


def write_rows(
    parts: Sequence[tuple[np.ndarray | None, int, int]], out: np.ndarray
) -> list[tuple[int, int]]:
    """Copy the real parts' rows into `out`; return (row, count) of the synthetic ones."""
    synthetic, row = [], 0
    for payload, offset, count in parts:
        if payload is None:
            synthetic.append((row, count))
        else:
            out[row : row + count] = payload[offset : offset + count]
        row += count
    return synthetic


def split_outputs(outputs: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Row views of `outputs`, one per part, in dispatch order."""
    views, row = [], 0
    for count in counts:
        views.append(outputs[row : row + count])
        row += count
    return views


def timed_run(runners: RunnerSet, key: RunnerKey, batch: np.ndarray) -> tuple[np.ndarray, float]:
    """Run a batch and return its outputs with the measured service time (seconds)."""
    t0 = time.perf_counter()
    outputs = runners.run(key, batch)
    return outputs, time.perf_counter() - t0


# ------------------------------------------------------------------ parent side
def dispatch_cap(scheduler: SchedulerConfig, token_base: int, precision: str) -> int:
    """Most samples any dispatch of one model can carry (the warm-up and shm size)."""
    split = scheduler.max_dispatch_samples or scheduler.tokens.capacity
    cap = max(split, scheduler.batch_cap())
    fits = max_samples_within(token_base, precision, scheduler.tokens.capacity)
    return max(1, min(cap, fits))


@dataclass
class LanePool:
    """Every lane, started in the background; `ready` once all have loaded."""

    lanes: list[Any]
    #: Why starting failed, if it did (shown by /readyz).
    error: str | None = None
    _started: bool = field(default=False, repr=False)

    @property
    def ready(self) -> bool:
        """Whether every lane has loaded and warmed its runners."""
        return self._started and all(lane.ready for lane in self.lanes)

    async def start(self) -> None:
        """Start every lane at once; records every failure in `error` (the gateway's
        start-up logs it, once)."""
        results = await asyncio.gather(
            *(lane.start() for lane in self.lanes), return_exceptions=True
        )
        failures = [
            f"lane {i}: {' '.join(str(r).split())}"  # one line, whatever the message
            for i, r in enumerate(results)
            if isinstance(r, Exception)
        ]
        if failures:
            self.error = "lanes failed to start: " + "; ".join(failures)
        self._started = True

    async def run(self, lane: int, batch: LaneBatch) -> LaneResult:
        """Run `batch` on lane `lane`."""
        return await self.lanes[lane].run(batch)

    async def abort(self, lane: int, reason: str) -> None:
        """Give up on lane `lane`'s dispatch in progress and replace its worker."""
        await self.lanes[lane].abort(reason)

    async def close(self) -> None:
        """Stop every worker (and release shared memory)."""
        await asyncio.gather(*(lane.close() for lane in self.lanes), return_exceptions=True)

    def describe(self) -> list[dict[str, Any]]:
        """Per lane, for GET /v1/lanes."""
        return [
            {
                "lane": lane.index,
                "group": lane.spec.group,
                "threads": lane.spec.threads,
                "priority": lane.spec.priority,
                "kind": lane.kind,
                "pid": lane.pid,
                "ready": lane.ready,
                "busy": lane.busy,
                "restarts": lane.restarts,
                "error": lane.error,
            }
            for lane in self.lanes
        ]


def runner_specs(config: GatewayConfig, specs: dict[str, WorkloadSpec]) -> tuple[RunnerSpec, ...]:
    """One RunnerSpec per configured model × backend × precision."""
    out = []
    for model in config.models:
        spec = specs[model.name]
        for backend in model.backends:
            for precision in model.precisions:
                out.append(
                    RunnerSpec(
                        workload=model.name,
                        backend=backend,
                        precision=precision,
                        max_samples=dispatch_cap(config.scheduler, spec.token_base, precision),
                        weights=model.weights,
                        onnx_file=model.onnx_file,
                        input_shape=tuple(spec.input_shape),
                        output_shape=tuple(spec.output_shape),
                    )
                )
    return tuple(out)


def export_models(config: GatewayConfig) -> None:
    """Export every in-tree model served on ONNX once, here, before any worker starts.

    Workers then find an up-to-date file and only open it, instead of racing to
    export the same graph (the exporter's file lock would serialise them anyway,
    but each would pay for building the module first).
    """
    from backends.onnx_backend import fp16_copy
    from backends.onnx_export import export_onnx_checked, will_reuse
    from workloads.registry import get_workload

    for model in config.models:
        if "onnx" not in model.backends or model.onnx_file is not None:
            continue
        workload = get_workload(model.name)
        options: dict[str, Any] = {"seed": config.seed, "weights": model.weights}
        if not will_reuse(workload, config.onnx_dir, **options):
            # Said before it starts: a fresh export takes a while on a small machine.
            log.info("exporting %s to ONNX (cached in %s)", model.name, config.onnx_dir)
        started = time.monotonic()
        done = export_onnx_checked(workload, config.onnx_dir, **options)
        if done.reused:
            log.info("reusing %s (up to date)", done.path)
        else:
            parity = done.parity.describe() if done.parity else "not checked"
            log.info("exported %s in %.1f s; %s", done.path, time.monotonic() - started, parity)
        if "fp16" in model.precisions:
            fp16_copy(done.path)


def worker_specs(config: GatewayConfig, specs: dict[str, WorkloadSpec]) -> list[WorkerSpec]:
    """One WorkerSpec per lane, lane groups in order (the core numbers lanes so too)."""
    runners = runner_specs(config, specs)
    out = []
    for group in config.scheduler.groups():
        for _ in range(group.count):
            out.append(
                WorkerSpec(
                    lane=len(out),
                    runners=runners,
                    threads=config.lanes.threads(group),
                    device=config.device,
                    seed=config.seed,
                    onnx_dir=config.onnx_dir,
                    group=group.name,
                    priority=group.priority,
                )
            )
    return out


def build_pool(config: GatewayConfig, specs: dict[str, WorkloadSpec]) -> LanePool:
    """The configured lanes (not started), each of its group's kind (or lanes.kind)."""
    kinds = {g.name: g.kind or config.lanes.kind for g in config.scheduler.groups()}
    lanes: list[Any] = []
    for worker in worker_specs(config, specs):
        if kinds[worker.group] == "process":
            from server.lanes_process import ProcessLane

            lanes.append(ProcessLane(worker, config.lanes.start_timeout_s))
        else:
            from server.lanes_thread import ThreadLane

            lanes.append(ThreadLane(worker))
    return LanePool(lanes)
