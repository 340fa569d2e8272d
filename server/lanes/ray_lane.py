"""Ray lanes: each lane's worker is a Ray actor on some node of a Ray cluster.

`RayLane` is the gateway side, a process lane whose worker Ray places: the
actor (server/lanes/ray_actor.py) asks for the lane's threads as CPUs (plus
`num_gpus` and custom resources), is pinned to a node (`node_wanted`) or spread
by Ray, and loads and warms its runners before the lane is ready (the model
files go along through the object store, for nodes on other machines). A dispatch's
real rows travel as one float32 array: through the object store (`ray.put`, off
the event loop), which the actor reads zero-copy on whichever node it is, or,
under Ray's own inline limit, inside the call itself (a put and its fetch cost
more than a small array's copy: measured 4.2 vs 1.7 ms a call). Outputs come
back the same way.

Failures, as the dispatcher and the cluster membership need them told apart:
an actor gone with its node raises `NodeLost` (the lane is gone for good; the
dispatch may be retried elsewhere); an actor that died on a live node raises
`WorkerDied` and is restarted on the same node (counted in `restarts`), and
runs wait for the restart; an exception inside the actor is a `LaneError`
with its message. Ray restarts nothing itself (`max_restarts=0`): a restart
must reload the models before the lane counts as ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from server.lanes.base import (
    LaneBatch,
    LaneError,
    LaneResult,
    LaneStatus,
    NodeLost,
    PartRows,
    RunnerKey,
    RunnerSpec,
    WorkerDied,
    WorkerSpec,
)
from server.lanes.model_files import gather
from server.lanes.ray_actor import LaneActor
from server.lanes.ray_cluster import alive_nodes, node_gone
from server.lanes.runners import split_outputs, with_runners, without_runners, write_rows

log = logging.getLogger("mlws.lanes")

#: Inputs at least this big go through the object store, assembled and put off the
#: event loop (a copy of a few MB takes milliseconds; a thread hop about 0.1 ms);
#: smaller ones ride inside the call, as Ray itself inlines arguments under 100 KiB.
PUT_BYTES = 100 * 1024


@functools.cache
def _actor_class() -> Any:
    """`LaneActor` as a Ray actor class (made once per process)."""
    return ray.remote(LaneActor)


class RayLane(LaneStatus):
    """A lane whose worker is a Ray actor with its own runners, on some node."""

    kind = "ray"

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        node_wanted: str | None = None,
        num_gpus: float = 0.0,
        resources: Mapping[str, float] | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        super().__init__(spec)
        #: The Ray node id (hex) the actor runs on, once started.
        self.node: str | None = None
        #: The node the actor must run on; None: wherever Ray spreads it.
        self.node_wanted = node_wanted
        self._num_gpus = num_gpus
        self._resources = dict(resources or {})
        self._start_timeout_s = start_timeout_s
        self._input_shapes = {r.key: r.input_shape for r in spec.runners}
        self._actor: Any = None
        self._pid: int | None = None
        self._closing = False
        self._restart: asyncio.Task[None] | None = None
        #: The node, once it has left the cluster: the lane is gone for good.
        self._lost: str | None = None

    @property
    def pid(self) -> int | None:
        """The actor's process id, on its node (which may be another machine)."""
        return self._pid

    async def start(self) -> None:
        """Create the actor and wait until it has loaded and warmed its runners."""
        await self._spawn()

    async def run(self, batch: LaneBatch) -> LaneResult:
        """Run `batch` on the actor (waiting for a restart in progress first).

        The service time reported is the lane's whole turn, from handing the dispatch
        over (inputs into the object store, the call) to having the outputs back, not
        the actor's time inside the model: the scheduler's service-time model must
        learn the hop to the node and back, or it would under-predict every Ray dispatch.
        """
        actor = await self._live_actor()
        started = time.perf_counter()
        rows, synthetic = await self._put_inputs(batch)
        call = actor.run.remote(batch.key, batch.samples, rows, synthetic)
        self.running = batch.dispatch_id  # the actor holds it now (see /v1/lanes)
        try:
            outputs, _inside_s = await call
            service_s = time.perf_counter() - started
        except RayTaskError as exc:  # raised inside the actor: the dispatch failed, not the lane
            cause = exc.cause
            raise LaneError(f"lane {self.index}: {type(cause).__name__}: {cause}") from None
        except RayError as exc:
            what = f"while running dispatch {batch.dispatch_id}"
            raise await self._failure(actor, exc, what) from None
        finally:
            self.running = None
        return LaneResult(split_outputs(outputs, batch.counts), service_s)

    async def load(self, runners: tuple[RunnerSpec, ...]) -> None:
        """Load and warm `runners` on the actor, between two dispatches (their files go
        along through the object store); LaneError if that fails. A restarted actor
        loads them too."""
        files = await asyncio.to_thread(gather, dataclasses.replace(self.spec, runners=runners))
        await self._call("load", runners, files)
        self._follow(with_runners(self.spec, runners))

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys` on the actor (a restarted one no longer loads them)."""
        self._follow(without_runners(self.spec, keys))
        await self._call("unload", keys)

    async def _call(self, method: str, *args: Any) -> None:
        actor = await self._live_actor()
        try:
            await getattr(actor, method).remote(*args)
        except RayTaskError as exc:
            cause = exc.cause
            raise LaneError(f"lane {self.index}: {type(cause).__name__}: {cause}") from None
        except RayError as exc:
            raise await self._failure(actor, exc, f"in {method}") from None

    def _follow(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._input_shapes = {r.key: r.input_shape for r in spec.runners}

    async def abort(self, reason: str) -> None:
        """Kill an actor stuck in a dispatch and start its replacement."""
        log.warning("lane %d: %s; killing its Ray actor (pid %s)", self.index, reason, self._pid)
        self.ready = False
        self._kill()
        self._restart_soon()

    async def close(self) -> None:
        """Kill the actor (a dispatch still waiting on it fails at once); never waits."""
        self._closing = True
        self.ready = False
        if self._restart is not None:
            self._restart.cancel()
        self._kill()

    # ---------------------------------------------------------------- actor
    def _options(self) -> dict[str, Any]:
        # A restarted actor stays on its node: the core books the lane's tokens there.
        node = self.node or self.node_wanted
        strategy = NodeAffinitySchedulingStrategy(node, soft=False) if node else "SPREAD"
        return {
            "num_cpus": self.spec.threads,
            "num_gpus": self._num_gpus,
            "resources": self._resources,
            "max_restarts": 0,
            "scheduling_strategy": strategy,
        }

    async def _spawn(self) -> None:
        """A new actor, loaded and warmed; LaneError (NodeLost) if it cannot be."""
        where = self.node or self.node_wanted or "any node"
        log.info("loading lane %d (ray, %d threads, %s)", self.index, self.spec.threads, where)
        await self._check_room()
        files = await asyncio.to_thread(gather, self.spec)
        actor = _actor_class().options(**self._options()).remote(self.spec, files)
        self._actor = actor
        try:
            async with asyncio.timeout(self._start_timeout_s):
                info = await actor.ready.remote()
        except TimeoutError:
            self._kill()
            raise self._failed(
                f"its Ray actor did not start within {self._start_timeout_s:.0f} s "
                f"(has a node {self._demand()} free?)"
            ) from None
        except RayError as exc:
            self._kill()
            raise await self._failure(actor, exc, "while loading") from None
        except BaseException:  # cancelled (shutdown): no actor may outlive its lane
            self._kill()
            raise
        if info["error"] is not None:
            self._kill()
            self.error = info["error"]
            raise LaneError(f"lane {self.index} failed to load its models: {self.error}")
        self.node, self._pid = info["node"], info["pid"]
        self.ready, self.error = True, None
        log.info("lane %d ready (Ray node %s, pid %d)", self.index, self.node, self._pid)

    async def _live_actor(self) -> Any:
        """The actor to run on, once any restart in progress has finished."""
        if self._lost is not None:
            raise NodeLost(self.index, self._lost)
        if self._closing:
            raise LaneError(f"lane {self.index} is shutting down")
        if self._restart is None or self._restart.done():
            if self.ready:
                return self._actor
            self._restart_soon()  # the last start failed: try once more for this dispatch
        assert self._restart is not None
        # Shielded: a dispatch given up on (watchdog, shutdown) must not stop the restart.
        await asyncio.shield(self._restart)
        if self._lost is not None:  # the node left while the actor restarted
            raise NodeLost(self.index, self._lost)
        if not self.ready:
            raise LaneError(f"lane {self.index}: its Ray actor failed to restart: {self.error}")
        return self._actor

    def _restart_soon(self) -> None:
        """Replace the actor in the background (once at a time); runs wait for it."""
        if self._closing or self._lost or (self._restart and not self._restart.done()):
            return
        self.restarts += 1
        self.ready = False
        log.warning("lane %d: restarting its Ray actor (#%d)", self.index, self.restarts)
        self._restart = asyncio.create_task(self._respawn(), name=f"lane{self.index}-restart")

    async def _respawn(self) -> None:
        self._kill()
        try:
            await self._spawn()
        except LaneError as exc:  # said by the run that waits for it, and kept in `error`
            self.error = self.error or str(exc)
            log.error("lane %d: restart failed: %s", self.index, exc)

    def _kill(self) -> None:
        actor, self._actor = self._actor, None
        if actor is None:
            return
        # Ray already shut down, or the actor gone with its node: nothing left to stop.
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)

    # ---------------------------------------------------------------- errors
    async def _failure(self, actor: Any, exc: RayError, what: str) -> LaneError:
        """What a Ray error of `actor` means for the lane: its node left (NodeLost), the
        actor died on a live node (WorkerDied; restarted), or another failure."""
        reason = _first_lines(exc)
        node = self.node or self.node_wanted
        # Asked of the node list and of the node's raylet itself: Ray declares a crashed
        # node dead only after its health checks (~15 s), the dispatch can be retried
        # elsewhere now.
        if node is not None and await asyncio.to_thread(node_gone, node):
            self.ready, self._lost = False, node
            return NodeLost(self.index, node)
        if not isinstance(exc, RayActorError):
            return LaneError(f"lane {self.index}: {reason}")
        if actor is self._actor:  # not already replaced (abort, or another run's failure)
            self._restart_soon()
        return WorkerDied(f"Ray actor of lane {self.index} (pid {self._pid}) died {what}: {reason}")

    async def _check_room(self) -> None:
        """Fail at once where Ray would keep the actor pending for ever: its node is gone,
        or no node (not its node) has the resources it asks for, even when idle."""
        nodes = await asyncio.to_thread(alive_nodes)
        node = self.node or self.node_wanted
        if node is not None and node not in nodes:
            self._lost = node
            raise NodeLost(self.index, node)
        demand = self._demand()
        candidates = [nodes[node]] if node is not None else list(nodes.values())
        if not any(all(r.get(k, 0.0) >= v for k, v in demand.items()) for r in candidates):
            where = f"node {node}" if node is not None else "no node of the Ray cluster"
            has = "has not" if node is not None else "has"
            raise self._failed(f"{where} {has} the resources a lane asks for: {demand}")

    def _failed(self, why: str) -> LaneError:
        self.error = why
        return LaneError(f"lane {self.index}: {why}")

    def _demand(self) -> dict[str, float]:
        demand: dict[str, float] = {"CPU": self.spec.threads}
        if self._num_gpus:
            demand["GPU"] = self._num_gpus
        return {**demand, **self._resources}

    # ---------------------------------------------------------------- inputs
    async def _put_inputs(self, batch: LaneBatch) -> tuple[Any, list[tuple[int, int]]]:
        """The dispatch's real rows as one array, or its object-store reference if big
        (None: every row is synthetic), and the (row, count) ranges the actor fills."""
        if all(payload is None for payload, _, _ in batch.parts):
            return None, [(0, batch.samples)]
        sample = self._input_shapes.get(batch.key)
        if sample is None:
            raise LaneError(f"lane {self.index} has no runner for {'/'.join(batch.key)}")
        shape = (batch.samples, *sample)
        if 4 * math.prod(shape) < PUT_BYTES:
            return _rows(batch.parts, shape)
        return await asyncio.to_thread(_put_rows, batch.parts, shape)


def _rows(
    parts: Sequence[PartRows], shape: tuple[int, ...]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    rows = np.empty(shape, dtype=np.float32)
    return rows, write_rows(parts, rows)


def _put_rows(
    parts: Sequence[PartRows], shape: tuple[int, ...]
) -> tuple[Any, list[tuple[int, int]]]:
    rows, synthetic = _rows(parts, shape)
    return ray.put(rows), synthetic


def _first_lines(exc: RayError) -> str:
    """A Ray error's message on one line, without its indented details (ids, ip)."""
    lines = [line.strip() for line in str(exc).splitlines() if line and not line[0].isspace()]
    return " ".join(lines) or type(exc).__name__
