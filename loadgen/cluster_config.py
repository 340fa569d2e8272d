"""The simulated cluster an experiment runs on: nodes and the network between them.

`cluster:` in an experiment config. Every node runs each lane group's `count`
lanes under the one scheduler; `scheduler.tokens.capacity` and
`service_time.cores` are per node. In live mode it describes the twin, which
should match the gateway's lanes (e.g. `lanes.ray.per_node` on that many nodes).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scheduling.sim_cluster import Topology


class ClusterConfig(BaseModel):
    """Nodes × lanes, and what each dispatch pays to reach its node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: int = Field(
        1,
        ge=1,
        le=4096,
        description="Nodes, each running every lane group's count lanes (node-0 also runs "
        "the gateway). 1: a single machine, exactly as without a cluster.",
    )
    network_ms: float = Field(
        0.0,
        ge=0,
        le=10_000,
        allow_inf_nan=False,
        description="Milliseconds every dispatch lasts longer: the hop to its lane's node "
        "and back (not CPU: the node's cores serve other lanes meanwhile).",
    )

    def topology(self) -> Topology:
        """The simulator's form of this cluster."""
        return Topology(nodes=self.nodes, network_s=self.network_ms / 1e3)
