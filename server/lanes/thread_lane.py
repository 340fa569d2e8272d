"""Thread lanes: one single-thread executor per lane, inside the server process.

Why one thread per lane: runners are not thread-safe, and a lane runs one
dispatch at a time anyway; a dedicated thread also keeps the lane's thread-local
state (PyTorch's intra-op setting, ONNX Runtime's session) in one place. The
event loop only awaits the executor's future: batch assembly, inference and
output splitting all happen on the lane's thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from server.lanes.base import (
    LaneBatch,
    LaneError,
    LaneResult,
    LaneStatus,
    RunnerKey,
    RunnerSpec,
    WorkerSpec,
    runner_names,
)
from server.lanes.runners import (
    RunnerSet,
    split_outputs,
    timed_run,
    with_runners,
    without_runners,
)

log = logging.getLogger("mlws.lanes")


class ThreadLane(LaneStatus):
    """A lane whose worker is a dedicated thread of the server process."""

    kind = "thread"

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self._runners = RunnerSet(spec)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lane{spec.lane}")

    @property
    def pid(self) -> int | None:
        """Thread lanes have no process of their own."""
        return None

    async def start(self) -> None:
        """Load and warm the runners on the lane's thread."""
        log.info("loading lane %d (thread, %d threads)", self.index, self.spec.threads)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._runners.load_all)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise LaneError(f"lane {self.index} failed to load its models: {self.error}") from exc
        self.ready = True
        log.info("lane %d ready", self.index)

    async def load(self, runners: tuple[RunnerSpec, ...]) -> None:
        """Load and warm `runners` on the lane's thread, between two dispatches; LaneError
        if that fails (the lane keeps what it had)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._runners.load, runners)
        except Exception as exc:
            what, why = runner_names(runners), f"{type(exc).__name__}: {exc}"
            raise LaneError(f"lane {self.index} failed to load {what}: {why}") from exc
        # What a replacement thread (abort) loads from now on.
        self.spec = with_runners(self.spec, runners)

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys` on the lane's thread."""
        self.spec = without_runners(self.spec, keys)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._runners.unload, keys)

    async def run(self, batch: LaneBatch) -> LaneResult:
        """Assemble, run and split `batch` on the lane's thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_sync, batch)
        finally:
            self.running = None

    def _run_sync(self, batch: LaneBatch) -> LaneResult:
        self.running = batch.dispatch_id  # on the lane thread: running, not merely queued
        runners = self._runners  # abort() may swap in new runners while this one runs
        inputs = runners.assemble(batch.key[0], batch.parts)
        outputs, service_s = timed_run(runners, batch.key, inputs)
        return LaneResult(split_outputs(outputs, batch.counts), service_s)

    async def abort(self, reason: str) -> None:
        """Replace a lane stuck in a dispatch: a fresh thread with fresh runners.

        A thread cannot be killed. ONNX Runtime runs are told to stop (they check
        between operators); any other runtime's call runs on in the abandoned
        thread, whose result nobody waits for. New dispatches queue on the new
        thread behind its loading, so the lane serves again once it has warmed.
        """
        log.warning(
            "lane %d: %s; replacing its thread (#%d)", self.index, reason, self.restarts + 1
        )
        self._runners.interrupt()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self.ready = False
        self._runners = RunnerSet(self.spec)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"lane{self.spec.lane}r{self.restarts}"
        )
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._reload)
        future.add_done_callback(self._reloaded)

    def _reload(self) -> None:
        self._runners.load_all()

    def _reloaded(self, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("lane %d: reloading after the watchdog failed: %s", self.index, self.error)
            return
        self.ready = True
        self.error = None
        log.info("lane %d ready again", self.index)

    async def close(self) -> None:
        """Release the runners once the thread is idle."""
        self.ready = False
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._runners.close)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
