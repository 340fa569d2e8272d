"""The simulated cluster: nodes, the lanes on each, their CPUs and the network hop.

A cluster is `nodes` identical nodes, named "node-0".."node-{N-1}", each running
every lane group's `count` lanes. The scheduler builds its first node's lanes
from the config; `place_lanes` puts those on node-0 and adds the other nodes'
lanes group by group, as the gateway does when Ray reports where its lane actors
run. The one scheduler sees every lane; a dispatch holds tokens of its lane's node.

Each node has its own CPUs: with shared cores, every node is a `SharedCores` of
its own (`PerNode` routes a dispatch to its lane's node), and the work outside the
lanes (the gateway's event loop) runs on node-0, where the gateway is. Every
dispatch also pays the network (a lane is a worker reached over it, even on the
gateway's node): its lane is held that much longer than its work (`NetworkHop`,
or `IndependentLanes(hop_s)`), while the node's CPUs are free.

All pure: times are arguments, as in scheduling/cpu_share.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heappop, heappush

from scheduling.config import LaneGroupConfig
from scheduling.cpu_share import Executor, IndependentLanes, LaneCpu, SharedCores
from scheduling.job import Dispatch
from scheduling.scheduler import Scheduler


@dataclass(frozen=True)
class Topology:
    """The simulated cluster's shape."""

    #: Nodes, each running every lane group's `count` lanes.
    nodes: int = 1
    #: Seconds each dispatch lasts longer: handing it to its node and the result back.
    network_s: float = 0.0

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")
        if not (self.network_s >= 0 and math.isfinite(self.network_s)):
            raise ValueError(f"network_s must be a finite number >= 0, got {self.network_s}")


#: One machine, no network: the simulator's default.
ONE_MACHINE = Topology()


def node_name(index: int) -> str:
    """The simulator's id of node `index`."""
    return f"node-{index}"


def place_lanes(
    sched: Scheduler, groups: Sequence[LaneGroupConfig], nodes: int
) -> list[tuple[int, LaneGroupConfig]]:
    """Lay out `nodes` nodes of `groups`' lanes; per lane index, (node index, group).

    The scheduler's own lanes (numbered by group, as the config lists them) go to
    node-0; every other node gets each group's `count` lanes through `add_lane`.
    """
    layout = [(0, g) for g in groups for _ in range(g.count)]
    for lane in range(len(layout)):
        sched.place(lane, node_name(0))
    for node in range(1, nodes):
        for group in groups:
            for _ in range(group.count):
                lane = sched.add_lane(group.name, node_name(node))
                if lane != len(layout):  # the layout is indexed by lane
                    raise RuntimeError(f"add_lane gave lane {lane}, expected {len(layout)}")
                layout.append((node, group))
    return layout


class PerNode:
    """One executor per node: a dispatch runs on its lane's node, overhead on node-0.

    Each node's next end is cached and refreshed only when that node changes, so
    an event costs one look at each node's cached end, not a recomputation of all.
    """

    def __init__(self, nodes: Sequence[Executor], node_of_lane: Sequence[int]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self._nodes = list(nodes)
        self._node_of = list(node_of_lane)
        self._ends = [n.next_end() for n in self._nodes]

    def start(self, dispatch: Dispatch, service_s: float, now: float) -> None:
        i = self._node_of[dispatch.lane]
        node = self._nodes[i]
        node.start(dispatch, service_s, now)
        self._ends[i] = node.next_end()

    def next_end(self) -> float:
        return min(self._ends)

    def finished(self, now: float) -> list[Dispatch]:
        out: list[Dispatch] = []
        for i, end in enumerate(self._ends):
            if end <= now:
                node = self._nodes[i]
                out += node.finished(now)
                self._ends[i] = node.next_end()
        return out

    def overhead(self, cpu_s: float, now: float) -> None:
        """The gateway's own work: on node-0, the machine it runs on."""
        node = self._nodes[0]
        node.overhead(cpu_s, now)
        self._ends[0] = node.next_end()


class NetworkHop:
    """Every dispatch ends `hop_s` after its work does: handed to its node and back.

    The hop is not CPU work: the inner executor (nodes sharing their cores) runs
    the dispatch for its service time, and its lane stays held for the round trip
    afterwards while the node's CPUs already serve other lanes. The loop wakes at
    the work's end too, where the node's shares change anyway; independent lanes,
    whose work ending changes nothing, fold the hop into the service time instead
    (`IndependentLanes(hop_s)`). Ends are reported in end order.
    """

    def __init__(self, inner: Executor, hop_s: float) -> None:
        if not (hop_s >= 0 and math.isfinite(hop_s)):
            raise ValueError(f"hop_s must be a finite number >= 0, got {hop_s}")
        self._inner = inner
        self._hop = hop_s
        self._returning: list[tuple[float, int, Dispatch]] = []  # (end, seq, dispatch)
        self._seq = 0

    def start(self, dispatch: Dispatch, service_s: float, now: float) -> None:
        self._inner.start(dispatch, service_s, now)

    def next_end(self) -> float:
        # The work's end too: collected exactly then, its hop starts at the right time.
        inner = self._inner.next_end()
        return min(inner, self._returning[0][0]) if self._returning else inner

    def finished(self, now: float) -> list[Dispatch]:
        for d in self._inner.finished(now):
            heappush(self._returning, (now + self._hop, self._seq, d))
            self._seq += 1
        out = []
        while self._returning and self._returning[0][0] <= now:
            out.append(heappop(self._returning)[2])
        return out

    def overhead(self, cpu_s: float, now: float) -> None:
        self._inner.overhead(cpu_s, now)


def cluster_executor(
    layout: Sequence[tuple[int, LaneGroupConfig]], topology: Topology, cores: float | None
) -> Executor:
    """The executor of a simulated cluster laid out as `layout` (`place_lanes`).

    Without `cores`, every lane has cores of its own, wherever it is. With, each
    node's lanes share that node's `cores` CPUs by their group's threads (one per
    lane if unset) and priority. One node is a single `SharedCores`, exactly the
    machine the simulator modelled before clusters.
    """
    hop = topology.network_s
    if cores is None:
        return IndependentLanes(hop)
    lanes = [LaneCpu(threads=g.threads or 1, priority=g.priority) for _, g in layout]
    executor: Executor
    if topology.nodes == 1:
        executor = SharedCores(cores, lanes)
    else:
        # Every node's executor sees all lanes (indexes are global); it runs only its own.
        nodes = [SharedCores(cores, lanes) for _ in range(topology.nodes)]
        executor = PerNode(nodes, [node for node, _ in layout])
    return NetworkHop(executor, hop) if hop else executor
