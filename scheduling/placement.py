"""Where a dispatch can run: lanes on nodes, and each node's memory tokens.

A cluster is nodes, each with its own memory: the token capacity is a budget *per
node*, and a dispatch holds tokens of the node its lane is on. Which lane a
dispatch gets is the most recently freed idle lane of its group whose node has
room for its tokens (scheduling/resources.py says why most recently freed).
Lanes join and leave at run time (a node joined or died); a lane that leaves
while running a dispatch goes when that dispatch ends.

One machine is one node, `DEFAULT_NODE`: with every lane on it the placement is
exactly the single token pool it replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scheduling.resources import LanePool, TokenPool

#: The node of lanes nobody placed: the gateway's own machine.
DEFAULT_NODE = "local"


class Placement:
    """Lanes in groups, each on a node; one token pool of `capacity` per node."""

    def __init__(self, counts: Sequence[int], capacity: int) -> None:
        self.lanes = LanePool(counts)
        #: Tokens per node.
        self.capacity = capacity
        self._node_of: list[str] = [DEFAULT_NODE] * self.lanes.size
        self._pools: dict[str, TokenPool] = {DEFAULT_NODE: TokenPool(capacity)}
        #: Live lanes per node: a node without any holds no budget.
        self._per_node: dict[str, int] = {DEFAULT_NODE: self.lanes.size}

    # ------------------------------------------------------------ topology
    def node_of(self, lane: int) -> str:
        """The node lane `lane` is (or was) on."""
        return self._node_of[lane]

    def add_lane(self, group: int, node: str) -> int:
        """A new idle lane of `group` on `node`; its index."""
        lane = self.lanes.add(group)
        self._node_of.append(node)
        self._count(node, +1)
        return lane

    def place(self, lane: int, node: str) -> None:
        """Move idle lane `lane` to `node` (where its worker actually runs)."""
        if not self.lanes.is_live(lane) or self.lanes.is_busy(lane):
            raise ValueError(f"lane {lane} cannot move: it is running a dispatch or gone")
        self._count(self._node_of[lane], -1)
        self._node_of[lane] = node
        self._count(node, +1)

    def remove_lane(self, lane: int) -> None:
        """Lane `lane` leaves (at once if idle, else when its dispatch ends)."""
        self.lanes.remove(lane)
        self._count(self._node_of[lane], -1)

    def live_lanes(self) -> list[int]:
        """Lanes not removed, in index order."""
        return [lane for lane in range(self.lanes.size) if self.lanes.is_live(lane)]

    # ---------------------------------------------------------- dispatches
    def acquire(
        self, group: int, tokens: int, prefer: Callable[[int], bool] | None = None
    ) -> int | None:
        """A lane of `group` whose node has `tokens` free, with the tokens taken; None
        if no idle lane's node has room. With `prefer`, a lane for which it holds comes
        first (one that already holds the dispatch's model), then any other."""
        pools, node_of = self._pools, self._node_of
        fits: Callable[[int], bool] | None = None
        if len(pools) == 1:  # one node: the common case, no per-lane check
            if not next(iter(pools.values())).fits(tokens):
                return None
        else:
            fits = lambda i: pools[node_of[i]].fits(tokens)  # noqa: E731
        lane = None
        if prefer is not None:
            lane = self.lanes.acquire(group, prefer if fits is None else _both(prefer, fits))
        if lane is None:
            lane = self.lanes.acquire(group, fits)
        if lane is not None:
            pools[node_of[lane]].take(tokens)
        return lane

    def release(self, lane: int, tokens: int, now: float) -> None:
        """Lane `lane`'s dispatch ended at `now`: its lane and tokens come back."""
        self._pools[self._node_of[lane]].give(tokens)
        self.lanes.release(lane, now)

    @property
    def tokens_in_use(self) -> int:
        """Tokens held by running dispatches, every node."""
        return sum(pool.in_use for pool in self._pools.values())

    @property
    def token_capacity(self) -> int:
        """Tokens of every node that has a live lane."""
        return self.capacity * sum(1 for n in self._per_node.values() if n > 0)

    def _count(self, node: str, delta: int) -> None:
        if node not in self._pools:
            self._pools[node] = TokenPool(self.capacity)
        self._per_node[node] = self._per_node.get(node, 0) + delta


def _both(a: Callable[[int], bool], b: Callable[[int], bool]) -> Callable[[int], bool]:
    return lambda lane: a(lane) and b(lane)
