"""The gateway's connection to its Ray cluster: one per process, as Ray allows.

`connect` joins an existing cluster or starts a local Ray instance, on loopback
(no dashboard, no usage reports, workers' logs left in Ray's session files);
`alive_nodes` is the cluster's node list, as the membership and the lanes read
it; `shutdown` stops a local instance this process started (a cluster it only
joined is left running).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator

import ray
import ray._private.ray_constants as ray_constants
from ray._private.services import get_ray_address_from_environment

log = logging.getLogger("mlws.lanes")

#: The namespace of the gateway's actors in the cluster.
NAMESPACE = "mlws"


class _Connection:
    """What this process did to Ray (Ray's own state is per process, so is this)."""

    lock = threading.Lock()
    started_here = False


def connect(address: str | None) -> None:
    """Join the cluster at `address` (HOST:PORT or "auto"), or start a local Ray instance
    (None); once per process: later calls return at once. ConnectionError if no cluster
    answers there."""
    with _Connection.lock:
        if ray.is_initialized():
            return
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        options = {"namespace": NAMESPACE, "log_to_driver": False, "ignore_reinit_error": True}
        if address is None:
            log.info("starting a local Ray instance (loopback)")
            with _on_loopback(), _own_signal_handlers():
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **options)
            _Connection.started_here = True
            return
        head = check_reachable(address)
        log.info("joining the Ray cluster at %s", head)
        near = _on_loopback() if _is_loopback(head) else contextlib.nullcontext()
        with near, _own_signal_handlers():
            ray.init(address=address, **options)  # "auto" as given: Ray then finds its token


def alive_nodes() -> dict[str, dict[str, float]]:
    """The cluster's alive nodes: Ray node id (hex) → its total resources ("CPU", "GPU",
    custom ones). A blocking call to Ray's control store: keep it off the event loop."""
    return {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}


def node_gone(node: str, timeout_s: float = 1.0) -> bool:
    """Whether `node` (Ray node id, hex) has left the cluster: Ray lists it dead or not
    at all, or its raylet no longer accepts connections. The probe matters for a node
    that crashed: Ray's health checks take ~15 s (3 s × 5) to declare it dead, while a
    call to its actors fails within ~2 s. A busy raylet still accepts (the kernel does),
    so only a dead one, or an unreachable machine, fails it. Blocking: off the loop."""
    info = next((n for n in ray.nodes() if n["NodeID"] == node), None)
    if info is None or not info["Alive"]:
        return True
    raylet = (info["NodeManagerAddress"], int(info["NodeManagerPort"]))
    try:
        socket.create_connection(raylet, timeout=timeout_s).close()
    except OSError:
        return True
    return False


def shutdown() -> None:
    """Stop the local Ray instance if this process started it."""
    with _Connection.lock:
        if _Connection.started_here:
            ray.shutdown()
            _Connection.started_here = False


def check_reachable(address: str) -> str:
    """The head's HOST:PORT for `address` ("auto": RAY_ADDRESS, or the cluster this
    machine's `ray start` joined); ConnectionError at once if there is none or nothing
    listens there (ray.init would retry for minutes)."""
    head = get_ray_address_from_environment(address, None) if address == "auto" else address
    if head is None:
        raise ConnectionError("address auto: no Ray cluster on this machine (ray start?)")
    host, _, port = head.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"no Ray cluster answers at {head}: {exc}") from None
    return head


def _is_loopback(head: str) -> bool:
    """Whether the cluster's head (HOST:PORT) is on loopback."""
    host = head.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: Ray resolves it


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Keep the process's SIGTERM and SIGINT handlers: ray.init, on the main thread,
    installs one that exits at once, which would cut the gateway's graceful drain."""
    if threading.current_thread() is not threading.main_thread():
        yield  # ray.init installs nothing off the main thread, and we could not restore
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: installed outside Python; nothing to restore
                signal.signal(sig, handler)


@contextlib.contextmanager
def _on_loopback() -> Iterator[None]:
    """Keep a loopback cluster on loopback while joining or starting it.

    ray.init replaces a loopback address (the head's, and the node's own) by this
    machine's outward address (ray-project/ray#59110), where a cluster started on
    127.0.0.1 does not listen, unless Ray believes multi-node clusters are off on
    this platform; for a cluster on loopback that is true: all its nodes are on this
    machine. Only while ray.init runs: afterwards Ray asks its own node.
    """
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
