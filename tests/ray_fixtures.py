"""A real Ray cluster of several nodes on this machine (`ray.cluster_utils.Cluster`), for
the test modules that need one.

Starting Ray takes seconds, so a module starts one cluster and shares it:

    @pytest.fixture(scope="module")
    def cluster() -> Iterator[LocalCluster]:
        with local_cluster(head_cpus=1, worker_cpus=[2, 2]) as started:
            yield started

Every address is on loopback, usage reports are off, there is no dashboard; this
process is connected as the driver (`server.lanes.ray_cluster.connect`, as a gateway
in this process connects), and everything is shut down at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ray
from ray.cluster_utils import Cluster

from server.lanes.ray_cluster import connect

LOOPBACK = "127.0.0.1"


@dataclass
class LocalCluster:
    """The cluster, and its worker nodes' Ray ids (hex) in the order they were added."""

    cluster: Cluster
    workers: list[str]

    @property
    def address(self) -> str:
        """HOST:PORT of the head, as `lanes.ray.address` takes it."""
        return str(self.cluster.address)

    def add_node(self, cpus: int) -> str:
        """Start one more worker node; returns its id (not added to `workers`)."""
        node = self.cluster.add_node(num_cpus=cpus, node_ip_address=LOOPBACK)
        self.cluster.wait_for_nodes()
        return str(node.node_id)

    def remove_node(self, node_id: str, graceful: bool = True) -> None:
        """Stop a worker node: gracefully (Ray marks it dead at once) or by SIGKILL to its
        processes (Ray's health checks notice after ~15 s; its actors' processes outlive
        their raylet for a moment)."""
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=graceful)


@contextlib.contextmanager
def local_cluster(head_cpus: int, worker_cpus: Sequence[int]) -> Iterator[LocalCluster]:
    """A head with `head_cpus` CPUs and one worker node per `worker_cpus` entry."""
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    head = {"num_cpus": head_cpus, "node_ip_address": LOOPBACK, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        workers = [cluster.add_node(num_cpus=n, node_ip_address=LOOPBACK) for n in worker_cpus]
        cluster.wait_for_nodes()
        connect(cluster.address)
        yield LocalCluster(cluster, [str(w.node_id) for w in workers])
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved
