"""The live driver of the scheduling core: one asyncio task, one Scheduler.

    submit(job)  → the job enters the core; its future resolves when it ends
    loop task    → poll(now) → each Dispatch runs on its lane → complete / fail
    cancel(job)  → the client went away; a still-queued job leaves the queue

Every call into the Scheduler happens on the event loop thread, so the core
needs no lock. The loop task sleeps on an asyncio.Event with a timeout: it wakes
for a submit, a completion, a cancellation, or the core's `next_wakeup` (a
batching window ending) — never on a fixed polling interval. The event loop
never runs inference and never touches big arrays: lanes assemble batches and
split outputs on their own threads (or processes); the loop only slices row
views back to jobs.

Every job ends through `_finish` exactly once — ok, failed, shed, cancelled or
rejected — which records metrics and stats and resolves the waiting request's
future: no future is left hanging, even when a worker dies mid-dispatch.

Lanes come and go with the nodes of a cluster (server/cluster.py): a lane that
left is removed from the core (`lane_left`), and a dispatch whose lane was lost
with its node (`NodeLost`) goes back to the core, which retries it once on
another lane if its deadline still allows, or fails its jobs (503 naming the node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scheduling.errors import JobTooLarge, NoLane, PredictedLate, QueueFull
from scheduling.job import JOB_CLASSES, Dispatch, Job, Part
from scheduling.residency import Swap
from scheduling.scheduler import Scheduler
from server.errors import Unavailable
from server.lanes.base import LaneBatch, LaneError, LaneResult, NodeLost
from server.lanes.pool import LaneWorkers
from server.loop_lag import LoopLag, monitor
from server.metrics import GatewayMetrics
from server.service_log import ServiceKey, ServiceLog
from server.service_times import ServiceTimes
from server.stats import SlidingWindowStats
from server.watchdog import Watchdog, run_watched

log = logging.getLogger("mlws.dispatcher")

#: Admission errors of the core → the reason label of mlws_rejections_total.
REJECTION_REASON: dict[type[Exception], str] = {
    PredictedLate: "predicted_late",
    QueueFull: "queue_full",
    JobTooLarge: "too_large",
    NoLane: "unavailable",
}


@dataclass
class JobResult:
    """How a job ended, for the request waiting on it."""

    job: Job
    #: (samples, *output_shape) when the job ended "ok".
    outputs: np.ndarray | None
    #: Samples of the micro-batch the job's last part ran in.
    batch_size: int
    #: Set when shutdown answered the request before the job ended.
    aborted: str | None = None


@dataclass
class _Waiter:
    """A request waiting on its job, with the outputs of its parts as they arrive."""

    job: Job
    future: asyncio.Future[JobResult]
    outputs: np.ndarray | None = None
    batch_size: int = 0

    def put(self, part: Part, rows: np.ndarray, batch_size: int) -> None:
        """Place one part's output rows at [offset, offset + count) of the job's outputs."""
        self.batch_size = batch_size
        if part.offset == 0 and part.count == self.job.samples:
            self.outputs = rows  # the whole job in one part: keep the view
            return
        if self.outputs is None:
            self.outputs = np.empty((self.job.samples, *rows.shape[1:]), dtype=rows.dtype)
        self.outputs[part.offset : part.offset + part.count] = rows


class Dispatcher:
    """Submits jobs to the core, runs its dispatches on lanes, and resolves futures."""

    def __init__(
        self,
        scheduler: Scheduler,
        pool: LaneWorkers,
        metrics: GatewayMetrics,
        stats: SlidingWindowStats,
        service_times: ServiceTimes,
        clock: Callable[[], float] = time.monotonic,
        lane_threads: Sequence[int] | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.scheduler = scheduler
        #: Per lane group, its service-time model: observed once per completed dispatch;
        #: the scheduler's forecasts and budget caps follow its version.
        self.service_times = service_times
        #: Intra-op threads of each lane: the threads column of GET /v1/profile's rows.
        self.lane_threads = list(lane_threads or [1] * scheduler.lanes)
        #: Every successful dispatch's service time: GET /v1/profile's training rows.
        self.service_log = ServiceLog()
        self.pool = pool
        self.metrics = metrics
        self.stats = stats
        self.clock = clock
        self._waiters: dict[int, _Waiter] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Strong references: the loop keeps only weak ones to running tasks.
        self._running: set[asyncio.Task[None]] = set()
        self._draining = False
        self._drain_timer: asyncio.TimerHandle | None = None
        #: Cuts off a dispatch that never returns (server/watchdog.py).
        self.watchdog = watchdog or Watchdog()
        #: The event loop's recent lag: admission keeps it in hand (server/loop_lag.py).
        self.loop_lag = LoopLag()
        self._lag_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ public
    def start(self) -> None:
        """Start the loop task (on the running event loop)."""
        self._task = asyncio.create_task(self._loop(), name="mlws-dispatcher")
        self._lag_task = asyncio.create_task(
            monitor(self.loop_lag, self._set_hop, self.clock), name="mlws-loop-lag"
        )
        self._publish()

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun (new jobs are refused)."""
        return self._draining

    @property
    def waiting(self) -> int:
        """Requests still waiting for their job."""
        return len(self._waiters)

    def submit(self, job: Job) -> asyncio.Future[JobResult]:
        """Admit `job`; the future resolves with its JobResult when the job ends.

        Raises Unavailable while draining, and whatever the core raises at admission
        (PredictedLate, QueueFull, JobTooLarge, UnknownWorkload) after recording the
        rejection and its reason.
        """
        if self._draining:
            self.metrics.count_rejection(job.workload, job.job_class, "unavailable")
            raise Unavailable("server is shutting down; not accepting new requests")
        now = self.clock()
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        try:
            self.scheduler.submit(job, now)
        except Exception as exc:
            job.outcome, job.end, job.error = "rejected", now, str(exc)
            self._record(job, now)
            reason = REJECTION_REASON.get(type(exc))
            if reason is not None:
                self.metrics.count_rejection(job.workload, job.job_class, reason)
            raise
        self._waiters[job.id] = _Waiter(job, future)
        self._flush_shed(now)  # a class that sheds late work: a hopeless job is shed at once
        self._wake.set()
        self._publish()
        return future

    def cancel(self, job: Job) -> None:
        """The client of `job` went away: drop it if still queued, forget its answer."""
        waiter = self._waiters.pop(job.id, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.cancel()
        now = self.clock()
        cancelled = self.scheduler.cancel(job.id, now)
        if cancelled is not None:
            self._finish(cancelled, now)
            self._wake.set()  # a cancelled head may have been blocking others
            self._publish()

    def begin_drain(self, timeout_s: float) -> None:
        """Refuse new jobs; queued and running ones have `timeout_s` to finish."""
        if self._draining:
            return
        self._draining = True
        log.info("draining: %d request(s) waiting, %.1f s allowed", len(self._waiters), timeout_s)
        reason = f"server shutting down: not finished within the {timeout_s:g} s drain timeout"
        self._drain_timer = asyncio.get_running_loop().call_later(timeout_s, self.abort_all, reason)

    def abort_all(self, reason: str) -> None:
        """Answer every waiting request now (503): queued jobs are cancelled."""
        now = self.clock()
        for job_id, waiter in list(self._waiters.items()):
            job = self.scheduler.cancel(job_id, now)
            if job is not None:
                job.error = reason
                self._finish(job, now, aborted=reason)
            else:
                # Running: the part cannot be stopped; answer now, let it run out.
                del self._waiters[job_id]
                if not waiter.future.done():
                    waiter.future.set_result(JobResult(waiter.job, None, 0, aborted=reason))
        self._publish()

    def lane_added(self, threads: int) -> None:
        """A lane joined (the core and the pool have it, under the next index)."""
        self.lane_threads.append(threads)
        self._wake.set()
        self._publish()

    def lane_left(self, lane: int, reason: str) -> None:
        """Lane `lane` left (its node died): the core no longer gives it work; a
        dispatch it runs ends as its node loss says (`NodeLost`)."""
        if not self.pool.retire(lane):
            return
        log.warning("lane %d left: %s", lane, reason)
        self.scheduler.remove_lane(lane, self.clock())
        self.metrics.forget_lane(lane)
        self._wake.set()
        self._publish()

    async def close(self) -> None:
        """Answer what is left, then stop the loop task and forget running dispatches."""
        self._draining = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.abort_all("server shutting down")
        for task in [self._task, self._lag_task, *self._running]:
            if task is not None:
                task.cancel()
        for task in [self._task, self._lag_task, *self._running]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -------------------------------------------------------------- loop
    async def _loop(self) -> None:
        while True:
            # Cleared before polling: anything that changes the core afterwards runs
            # on this same loop during the await below and sets the event again, so
            # no wake-up can be lost between the poll and the wait.
            self._wake.clear()
            now = self.clock()
            try:
                for dispatch in self.scheduler.poll(now):
                    self._launch(dispatch)
                self._flush_shed(now)
                for job in self.scheduler.take_failed():  # retries with no time left
                    self._finish(job, now)
                wakeup = self.scheduler.next_wakeup(now)
            except Exception:
                log.exception("scheduler failed; answering every waiting request")
                self.abort_all("internal scheduler error")
                wakeup = None
            self._publish()
            timeout = None if wakeup is None else max(0.0, wakeup - self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _launch(self, dispatch: Dispatch) -> None:
        # Contention as the dispatch starts, the predictor's busy_lanes feature: the
        # other lanes the core has running a dispatch (those of this poll included).
        busy = self.scheduler.busy_lanes - 1
        self.metrics.observe_batch(dispatch.workload, dispatch.samples)
        task = asyncio.create_task(self._execute(dispatch, busy), name=f"dispatch-{dispatch.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, dispatch: Dispatch, busy_lanes: int) -> None:
        batch = LaneBatch(
            dispatch.id,
            (dispatch.workload, dispatch.backend, dispatch.precision),
            [(p.job.payload, p.offset, p.count) for p in dispatch.parts],
        )
        try:
            if dispatch.swap is not None:
                await self._swap(dispatch, dispatch.swap)
            result = await run_watched(self.pool, dispatch.lane, batch, self._limit_s(dispatch))
            _check_lengths(dispatch, result)
        except NodeLost as exc:
            self._lost(dispatch, exc)
        except Exception as exc:
            if dispatch.lane in self.pool.retired:  # its node left first: whatever broke
                node = self.scheduler.node_of(dispatch.lane)
                self._lost(dispatch, NodeLost(dispatch.lane, node, str(exc)))
                return
            reason = str(exc) if isinstance(exc, LaneError) else f"{type(exc).__name__}: {exc}"
            log.warning("dispatch %d on lane %d failed: %s", dispatch.id, dispatch.lane, reason)
            now = self.clock()
            for job in self.scheduler.fail(dispatch, now, reason):
                self._finish(job, now)
        else:
            now = self.clock()
            group = (dispatch.workload, dispatch.backend, dispatch.precision)
            lanes = self.scheduler.lane_group(dispatch.lane)
            self.service_times.observe(lanes.name, group, dispatch.samples, result.service_s)
            threads = self.lane_threads[dispatch.lane]
            key = ServiceKey(*group, dispatch.samples, threads, busy_lanes)
            self.service_log.record(key, result.service_s)
            done = self.scheduler.complete(dispatch, now)
            for part, rows in zip(dispatch.parts, result.outputs, strict=True):
                waiter = self._waiters.get(part.job.id)
                if waiter is not None and part.job.outcome in (None, "ok"):
                    waiter.put(part, rows, dispatch.samples)
            for job in done:
                self._finish(job, now)
        finally:
            self._wake.set()
            self._publish()

    # ----------------------------------------------------------- helpers
    async def _swap(self, dispatch: Dispatch, swap: Swap) -> None:
        """The lane evicts and loads what the core booked for `dispatch` (lane budgets);
        the load time measured is what the core predicts the model's next loads by."""
        key = (dispatch.workload, dispatch.backend, dispatch.precision)
        started = self.clock()
        try:
            await self.pool.swap(dispatch.lane, swap.evict, key)
        except Exception:
            self.scheduler.load_failed(dispatch)  # the lane does not hold it after all
            raise
        load_s = self.clock() - started
        self.scheduler.note_load(dispatch.workload, load_s)
        self.metrics.observe_swap(dispatch.workload, [k[0] for k in swap.evict], load_s)
        log.info("lane %d loaded %s in %.3f s", dispatch.lane, "/".join(key), load_s)

    def _lost(self, dispatch: Dispatch, exc: NodeLost) -> None:
        """`dispatch`'s lane went with its node: the lane leaves, the core retries the
        dispatch once elsewhere or fails its jobs now."""
        log.warning("dispatch %d lost with lane %d: %s", dispatch.id, dispatch.lane, exc)
        self.metrics.count_lost_dispatch(exc.node)
        self.lane_left(dispatch.lane, str(exc))
        now = self.clock()
        for job in self.scheduler.requeue(dispatch, now, str(exc)):
            self._finish(job, now)

    def _limit_s(self, dispatch: Dispatch) -> float | None:
        """The watchdog's cut-off for `dispatch`, from its lane group's mean service time."""
        model = self.service_times[self.scheduler.lane_group(dispatch.lane).name]
        predicted = model.predict(
            dispatch.workload, dispatch.backend, dispatch.precision, dispatch.samples
        )
        return self.watchdog.limit_s(predicted)

    def _set_hop(self, seconds: float) -> None:
        self.scheduler.hop_s = seconds

    def _finish(self, job: Job, now: float, aborted: str | None = None) -> None:
        """A job ended (any outcome): record it and answer its request, exactly once."""
        self._record(job, now)
        waiter = self._waiters.pop(job.id, None)
        if waiter is None or waiter.future.done():
            return
        outputs = waiter.outputs if job.outcome == "ok" else None
        waiter.future.set_result(JobResult(job, outputs, waiter.batch_size, aborted))

    def _record(self, job: Job, now: float) -> None:
        self.metrics.observe_completion(job)
        self.stats.record(job, now)

    def _flush_shed(self, now: float) -> None:
        for job in self.scheduler.take_shed():
            self._finish(job, now)

    def _publish(self) -> None:
        """Gauges from the core's read-only views (cheap: a handful of sets)."""
        m, s = self.metrics, self.scheduler
        for job_class in JOB_CLASSES:
            m.set_queue_depth(job_class, s.queue_depth(job_class))
        m.set_tokens(s.tokens_in_use, s.token_capacity)
        for lane in s.live_lanes():
            m.set_lane_busy(lane, s.node_of(lane), s.lane_busy(lane))


def _check_lengths(dispatch: Dispatch, result: LaneResult) -> None:
    """One output array per part, each with one row per sample, or the dispatch fails."""
    counts = [p.count for p in dispatch.parts]
    got = [len(o) for o in result.outputs]
    if got != counts:
        raise LaneError(
            f"lane {dispatch.lane} returned output rows {got} for parts of {counts} samples"
        )
