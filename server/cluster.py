"""The gateway's lanes follow the nodes of its Ray cluster.

`ClusterMembership` reads the cluster's node list every `lanes.ray.membership_s`:

- a node that left takes its lanes with it: each leaves the scheduling core at
  once (`Dispatcher.lane_left`), its worker is stopped, and a dispatch it was
  running comes back as `NodeLost` (retried once elsewhere, or 503 naming the node);
- with `lanes.ray.per_node`, every node with room for a full set of lanes gets
  each group's `count` lanes, at start-up and whenever a node joins. A new lane
  is started (models loaded and warmed) before the core may give it work.

Which node a lane landed on is the core's to know (`Scheduler.place`): tokens
are a budget per node, and /v1/lanes and the metrics show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence

from scheduling.scheduler import Scheduler
from server.config import GatewayConfig
from server.dispatcher import Dispatcher
from server.lanes.base import Lane, WorkerSpec
from server.lanes.build import ray_lane
from server.lanes.pool import LaneWorkers

log = logging.getLogger("mlws.cluster")

#: Alive nodes: node id → its total resources (as Ray reports them: "CPU", "GPU", custom).
NodeList = Callable[[], Mapping[str, Mapping[str, float]]]
#: A lane (not started) for `spec`, pinned to a node (None: wherever Ray puts it).
LaneFactory = Callable[[WorkerSpec, str | None], Lane]


class ClusterMembership:
    """Follows the cluster's nodes: lanes leave with theirs, and join with new ones."""

    def __init__(
        self,
        scheduler: Scheduler,
        pool: LaneWorkers,
        dispatcher: Dispatcher,
        specs: Sequence[WorkerSpec],
        *,
        nodes: NodeList,
        make_lane: LaneFactory,
        per_node: bool,
        demand: Mapping[str, float],
        interval_s: float,
    ) -> None:
        self.scheduler = scheduler
        self.pool = pool
        self.dispatcher = dispatcher
        #: One node's share of lanes, in lane order (the config's lane groups × counts).
        self._specs = list(specs)
        self._nodes = nodes
        self._make_lane = make_lane
        self._per_node = per_node
        #: Resources one node's share of lanes asks for: a node with less gets none.
        self._demand = dict(demand)
        self._interval_s = interval_s
        self._joining: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._too_small: set[str] = set()
        # Strong references: the loop keeps only weak ones to running tasks.
        self._closing: set[asyncio.Task[None]] = set()

    async def place_at_start(self) -> None:
        """Before the lanes start: with per_node, pin the configured lanes to the first
        node with room and add a share for every other such node."""
        if not self._per_node:
            return
        nodes = [n for n in sorted((await self._alive()).items()) if self._fits(*n)]
        if not nodes:
            raise RuntimeError(
                f"no node of the cluster has room for one share of lanes ({self._demand})"
            )
        first, *others = (node for node, _ in nodes)
        for lane in self.pool.lanes:
            if hasattr(lane, "node_wanted"):  # a Ray lane (a group may run elsewhere)
                lane.node_wanted = first
        for node in others:
            for spec in self._specs:
                self._adopt(self._make_lane(spec, node), spec, node)

    def record_nodes(self) -> None:
        """After the lanes started: tell the core where each one landed."""
        for lane in self.pool.live():
            node = getattr(lane, "node", None)
            if node is not None and self.scheduler.node_of(lane.index) != node:
                self.scheduler.place(lane.index, node)

    def start(self) -> None:
        """Watch the node list from now on (on the running loop)."""
        self._task = asyncio.create_task(self._watch(), name="mlws-cluster-membership")

    async def close(self) -> None:
        """Stop watching and stop any lane still starting."""
        for task in [self._task, *self._joining.values(), *self._closing]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def disconnect(self) -> None:
        """After the lanes stopped: stop the local Ray instance if this gateway started one."""
        from server.lanes.ray_cluster import shutdown  # as in build_membership

        shutdown()

    async def sync(self) -> None:
        """One look at the node list: lanes of a node gone leave; new nodes get lanes."""
        alive = await self._alive()
        for lane in self.pool.live():
            node = self.scheduler.node_of(lane.index)
            if getattr(lane, "node", None) is not None and node not in alive:
                self.dispatcher.lane_left(lane.index, f"node {node} left the cluster")
                # Stopping its worker ends a dispatch still waiting on it (NodeLost).
                closing = asyncio.create_task(lane.close(), name=f"close-lane-{lane.index}")
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        if not self._per_node:
            return
        placed = {self.scheduler.node_of(i) for i in self.scheduler.live_lanes()}
        # A node whose lanes were lost stays listed alive until the cluster's health
        # check gives up on it (seconds): it never gets lanes again (Ray never reuses
        # a node id; a node that comes back joins under a new one).
        lost = {self.scheduler.node_of(i) for i in self.pool.retired}
        for node, resources in alive.items():
            if node in placed or node in lost or node in self._joining:
                continue
            if not self._fits(node, resources):
                continue
            task = asyncio.create_task(self._join(node), name=f"join-{node[:8]}")
            self._joining[node] = task

    # ------------------------------------------------------------ helpers
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sync()
            except Exception:  # the next look may succeed; never let the watcher die
                log.exception("reading the cluster's nodes failed")

    async def _join(self, node: str) -> None:
        """Start one share of lanes on `node`; each serves once it has loaded."""
        # With the models loaded or unloaded at run time since start-up; under a lane
        # budget, those that fit an empty lane (the others load on demand).
        served = self.pool.runners
        held = set(self.scheduler.fitting([r.key for r in served]))
        runners = tuple(r for r in served if r.key in held)
        specs = [dataclasses.replace(s, runners=runners) for s in self._specs]
        lanes = [(self._make_lane(spec, node), spec) for spec in specs]
        log.info("node %s joined: starting %d lane(s)", node, len(lanes))
        try:
            results = await asyncio.gather(
                *(lane.start() for lane, _ in lanes), return_exceptions=True
            )
            for (lane, spec), result in zip(lanes, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("lane on node %s failed to start: %s", node, result)
                    await lane.close()
                    continue
                self._adopt(lane, spec, node)
                log.info("lane %d on node %s serves", lane.index, node)
        finally:
            self._joining.pop(node, None)

    def _adopt(self, lane: Lane, spec: WorkerSpec, node: str) -> None:
        """Give `lane` the core's next index on `node` and put it in the pool."""
        index = self.scheduler.add_lane(spec.group, node)
        self.scheduler.preload(index, [r.key for r in spec.runners], 0.0)
        lane.index = index
        lane.spec = dataclasses.replace(spec, lane=index)
        self.pool.add(lane)
        self.dispatcher.lane_added(spec.threads)

    async def _alive(self) -> Mapping[str, Mapping[str, float]]:
        return await asyncio.to_thread(self._nodes)

    def _fits(self, node: str, resources: Mapping[str, float]) -> bool:
        short = {k: v for k, v in self._demand.items() if resources.get(k, 0.0) < v}
        if short and node not in self._too_small:
            self._too_small.add(node)
            log.warning("node %s has no room for a share of lanes (%s short)", node, short)
        return not short


def build_membership(
    config: GatewayConfig,
    scheduler: Scheduler,
    pool: LaneWorkers,
    dispatcher: Dispatcher,
) -> ClusterMembership | None:
    """The membership of a gateway with Ray lanes (None without any)."""
    ray_groups = {
        g.name for g in config.scheduler.groups() if (g.kind or config.lanes.kind) == "ray"
    }
    if not ray_groups:
        return None
    # Imported only here: a gateway without Ray lanes never loads Ray.
    from server.lanes.ray_cluster import alive_nodes

    share = [lane.spec for lane in pool.lanes if lane.spec.group in ray_groups]
    ray = config.lanes.ray
    demand: dict[str, float] = {"CPU": float(sum(spec.threads for spec in share))}
    if ray.num_gpus:
        demand["GPU"] = ray.num_gpus * len(share)
    for name, amount in ray.resources.items():
        demand[name] = amount * len(share)
    return ClusterMembership(
        scheduler,
        pool,
        dispatcher,
        share,
        nodes=alive_nodes,
        make_lane=functools.partial(ray_lane, config),
        per_node=ray.per_node,
        demand=demand,
        interval_s=ray.membership_s,
    )
