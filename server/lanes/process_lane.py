"""Process lanes: one spawned worker process per lane, tensors through shared memory.

`ProcessLane` is the parent side: a single-thread executor per lane writes the
dispatch's real rows into the lane's input block, sends a `RunRequest` (names,
shapes, row ranges of synthetic input), and waits on the pipe *and* the process
sentinel, so a worker that dies mid-dispatch fails that dispatch at once instead
of hanging it. A watcher thread per worker notices a death while idle too; the
lane then restarts its worker (counted in `restarts`) and is not ready until the
new worker has loaded and warmed its models. Runs queued for the lane wait for
the restart on the lane's executor. The worker side is server/lanes/process_worker.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing as mp
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from typing import Any

from server.lanes.base import (
    LaneBatch,
    LaneError,
    LaneResult,
    LaneStatus,
    RunnerKey,
    RunnerSpec,
    WorkerDied,
    WorkerSpec,
    runner_names,
)
from server.lanes.messages import (
    Changed,
    Loaded,
    LoadRunners,
    RunDone,
    RunRequest,
    UnloadRunners,
    WorkerReply,
)
from server.lanes.process_worker import worker_main
from server.lanes.runners import split_outputs, with_runners, without_runners, write_rows
from server.lanes.shm import ShmBlock

log = logging.getLogger("mlws.lanes")


class ProcessLane(LaneStatus):
    """A lane whose worker is a spawned process with its own runners."""

    kind = "process"

    def __init__(self, spec: WorkerSpec, start_timeout_s: float = 300.0) -> None:
        super().__init__(spec)
        self._start_timeout_s = start_timeout_s
        self._shapes = {r.key: (r.input_shape, r.output_shape) for r in spec.runners}
        self._in = ShmBlock(spec.max_bytes("input"))
        self._out = ShmBlock(spec.max_bytes("output"))
        self._proc: Any = None
        self._conn: Connection | None = None
        # Bumped per spawned worker, so that a late death notice of an old one is ignored.
        self._generation = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lane{spec.lane}")

    @property
    def pid(self) -> int | None:
        """The current worker's process id."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the worker and wait until it has loaded and warmed its runners."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._executor, self._spawn)

    async def run(self, batch: LaneBatch) -> LaneResult:
        """Run `batch` in the worker (restarting it first if it died)."""
        assert self._loop is not None, "start() first"
        try:
            return await self._loop.run_in_executor(self._executor, self._run_sync, batch)
        finally:
            self.running = None

    async def load(self, runners: tuple[RunnerSpec, ...]) -> None:
        """Load and warm `runners` in the worker, between two dispatches (on the lane
        thread, so runs queue behind it); LaneError if that fails, the worker keeping
        what it had. A worker restarted later loads them too."""
        assert self._loop is not None, "start() first"
        await self._loop.run_in_executor(self._executor, self._change_sync, LoadRunners(runners))

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys` in the worker."""
        assert self._loop is not None, "start() first"
        await self._loop.run_in_executor(self._executor, self._change_sync, UnloadRunners(keys))

    async def abort(self, reason: str) -> None:
        """Kill a worker stuck in a dispatch; the death watcher restarts it."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            log.warning("lane %d: %s; killing its worker (pid %d)", self.index, reason, proc.pid)
            proc.kill()

    async def close(self) -> None:
        """Stop the worker (terminate, then kill) and unlink the shared memory."""
        self._closing = True
        self.ready = False
        proc = self._proc
        if proc is not None and proc.is_alive():
            # From the loop thread: a run in flight on the lane thread sees the
            # sentinel fire and fails at once instead of holding the shutdown.
            proc.terminate()
        await asyncio.to_thread(self._finish_close)

    # ------------------------------------------------------- lane thread only
    def _spawn(self) -> None:
        log.info("loading lane %d (process, %d threads)", self.index, self.spec.threads)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=worker_main, args=(child, self.spec), name=f"mlws-lane{self.index}", daemon=True
        )
        proc.start()
        child.close()  # the worker holds the only other end: its death gives us EOF
        self._proc, self._conn = proc, parent
        self._generation += 1
        try:
            msg = self._receive(self._start_timeout_s)
        except LaneError as exc:
            self._stop_worker()
            self.error = str(exc)
            raise
        if not isinstance(msg, Loaded):
            self._stop_worker()
            self.error = msg.error
            raise LaneError(f"lane {self.index} failed to load its models: {msg.error}")
        self._watch(proc, self._generation)
        self.ready = True
        self.error = None
        log.info("lane %d ready (pid %d)", self.index, proc.pid)

    def _ensure_alive(self) -> None:
        if self._closing:
            raise LaneError(f"lane {self.index} is shutting down")
        if self._proc is not None and self._proc.is_alive():
            return
        reason = self._death_reason()
        self.restarts += 1
        log.warning("lane %d: worker %s; restarting (#%d)", self.index, reason, self.restarts)
        self._stop_worker()
        self._spawn()

    def _run_sync(self, batch: LaneBatch) -> LaneResult:
        self._ensure_alive()
        n = batch.samples
        shapes = self._shapes.get(batch.key)
        if shapes is None:
            raise LaneError(f"lane {self.index} has no runner for {'/'.join(batch.key)}")
        in_shape, out_shape = shapes
        in_name = None
        synthetic = [(0, n)]
        if any(payload is not None for payload, _, _ in batch.parts):
            self._in.ensure(4 * n * math.prod(in_shape))
            view = self._in.array((n, *in_shape))
            synthetic = write_rows(batch.parts, view)
            del view  # no export of the block may outlive this call (it may be replaced)
            in_name = self._in.name
        self._out.ensure(4 * n * math.prod(out_shape))
        request = RunRequest(batch.dispatch_id, batch.key, n, in_name, synthetic, self._out.name)
        try:
            assert self._conn is not None
            self._conn.send(request)
        except OSError:  # BrokenPipeError and friends: the worker is gone
            self.ready = False
            raise WorkerDied(self._died_message(batch.dispatch_id)) from None
        self.running = batch.dispatch_id  # only once the worker holds it (see /v1/lanes)
        reply = self._receive(None, batch.dispatch_id)
        if not isinstance(reply, RunDone):
            raise LaneError(f"lane {self.index}: {getattr(reply, 'error', reply)}")
        outputs = self._out.array(reply.shape).copy()  # the block is reused by the next run
        return LaneResult(split_outputs(outputs, batch.counts), reply.service_s)

    def _change_sync(self, request: LoadRunners | UnloadRunners) -> None:
        """Send a load or unload and wait for its answer; the spec a restarted worker
        loads from follows it once done (an unload at once: a worker that dies while
        unloading must not come back with the runners)."""
        self._ensure_alive()
        if isinstance(request, UnloadRunners):
            self._follow(without_runners(self.spec, request.keys))
        try:
            assert self._conn is not None
            self._conn.send(request)
        except OSError:
            self.ready = False
            raise WorkerDied(self._died_message(None)) from None
        reply = self._receive(self._start_timeout_s)
        if not isinstance(reply, Changed):
            what = runner_names(request.runners) if isinstance(request, LoadRunners) else ""
            why = getattr(reply, "error", reply)
            raise LaneError(f"lane {self.index} failed to load {what}: {why}")
        if isinstance(request, LoadRunners):
            self._follow(with_runners(self.spec, request.runners))

    def _follow(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._shapes = {r.key: (r.input_shape, r.output_shape) for r in spec.runners}

    def _receive(self, timeout: float | None, dispatch_id: int | None = None) -> WorkerReply:
        """The worker's next message; WorkerDied if it exits first."""
        assert self._conn is not None and self._proc is not None
        ready = wait([self._conn, self._proc.sentinel], timeout)
        if not ready:
            raise LaneError(f"lane {self.index}: worker did not answer within {timeout:.0f} s")
        if self._conn in ready:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        self.ready = False
        raise WorkerDied(self._died_message(dispatch_id))

    def _died_message(self, dispatch_id: int | None) -> str:
        what = "while loading" if dispatch_id is None else f"while running dispatch {dispatch_id}"
        return f"worker process of lane {self.index} {self._death_reason()} {what}"

    def _death_reason(self) -> str:
        proc = self._proc
        if proc is None:
            return "was not started"
        proc.join(timeout=2.0)
        code = proc.exitcode
        if code is None:
            return f"(pid {proc.pid}) stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"(pid {proc.pid}) was killed by {name}"
        return f"(pid {proc.pid}) exited with code {code}"

    def _stop_worker(self) -> None:
        proc, conn = self._proc, self._conn
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=2.0)

    def _finish_close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._stop_worker()
        self._in.close()
        self._out.close()

    # ------------------------------------------------------- death watching
    def _watch(self, proc: Any, generation: int) -> None:
        # A daemon thread per worker blocks on its sentinel: the only way to notice a
        # death while the lane is idle without polling.
        def watch() -> None:
            wait([proc.sentinel])
            loop = self._loop
            if loop is not None and not loop.is_closed():
                # RuntimeError: the loop closed in between.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._on_death, generation)

        threading.Thread(target=watch, name=f"lane{self.index}-watch", daemon=True).start()

    def _on_death(self, generation: int) -> None:
        """On the loop: the worker of `generation` exited; restart it on the lane thread."""
        if self._closing or generation != self._generation or self._loop is None:
            return
        self.ready = False
        future = self._loop.run_in_executor(self._executor, self._ensure_alive)
        future.add_done_callback(self._restart_done)

    def _restart_done(self, future: Future[None] | asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("lane %d: restart failed: %s", self.index, future.exception())
