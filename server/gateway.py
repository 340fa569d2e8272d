"""One running gateway's state, whatever protocol reaches it.

`build_gateway(config)` wires the components (catalogue, scheduler, lanes,
dispatcher, metrics); the HTTP app (server/app.py) and the gRPC server
(server/grpc_v2/) both read this object, and nothing here knows about either.
Start-up (check, export, load, calibrate) is server/startup.py.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from backends.devices import cuda_memory_mib, resolve_device, torch_cuda_available
from predictor.memory_costs import read_memory_costs
from scheduling.config_errors import ConfigError
from scheduling.scheduler import Scheduler
from scheduling.tokens import TokenCost
from server.catalogue import ServedModels
from server.cluster import ClusterMembership, build_membership
from server.config import GatewayConfig
from server.dispatcher import Dispatcher
from server.lanes.build import build_pool
from server.lanes.pool import LaneWorkers
from server.metrics import GatewayMetrics
from server.service_times import load_service_models
from server.stats import SlidingWindowStats
from server.watchdog import Watchdog


@dataclass
class Gateway:
    """One running gateway's state (app.state.gateway)."""

    config: GatewayConfig
    #: The one catalogue of served models.
    models: ServedModels
    scheduler: Scheduler
    pool: LaneWorkers
    dispatcher: Dispatcher
    metrics: GatewayMetrics
    stats: SlidingWindowStats
    #: starting → checking → exporting → loading → calibrating → ready (or failed).
    phase: str = "starting"
    #: Why start-up failed (phase "failed"): one line, shown by /readyz and /stats.
    error: str | None = None
    loader: asyncio.Task[None] | None = None
    #: With Ray lanes: lanes follow the cluster's nodes (server/cluster.py).
    cluster: ClusterMembership | None = None
    ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def ready(self) -> bool:
        """Every lane loaded and warmed, and not shutting down."""
        return self.phase == "ready" and self.pool.ready and not self.dispatcher.draining

    @property
    def accepting(self) -> bool:
        """Whether inference requests are taken: started up and not shutting down.

        A lane restarting after a worker crash does not stop admission: its
        dispatches wait for the new worker, the other lanes keep serving.
        """
        return self.phase == "ready" and not self.dispatcher.draining

    def not_ready_reason(self) -> str:
        """Why /readyz is 503."""
        if self.dispatcher.draining:
            return "server is shutting down"
        if self.phase == "failed":
            return self.error or "start-up failed"
        if self.phase == "ready":
            down = [str(lane.index) for lane in self.pool.live() if not lane.ready]
            return f"lane(s) {', '.join(down)} restarting"
        return f"not ready: {self.phase} models"

    def begin_drain(self) -> None:
        """Shutdown has begun (uvicorn got SIGTERM): drain within drain_timeout_s."""
        self.dispatcher.begin_drain(self.config.drain_timeout_s)


def build_gateway(config: GatewayConfig) -> Gateway:
    """Every component of one gateway, not started."""
    config = with_device_capacity(config)
    models = ServedModels.from_config(config)
    metrics = GatewayMetrics()
    for name in models.names():
        metrics.register_model(name)
    stats = SlidingWindowStats(config.stats_window_s)
    service = load_service_models(config, models.specs(), metrics)
    tokens = {m.name: m.spec.token_base for m in models}
    scheduler = Scheduler(config.scheduler, tokens, service, measured_costs=measured_costs(config))
    pool = build_pool(config, models.workloads(), scheduler)
    threads = [lane.spec.threads for lane in pool.lanes]
    watchdog = Watchdog(config.lanes.watchdog_min_s, config.lanes.watchdog_factor)
    dispatcher = Dispatcher(
        scheduler, pool, metrics, stats, service, lane_threads=threads, watchdog=watchdog
    )
    cluster = build_membership(config, scheduler, pool, dispatcher)
    return Gateway(config, models, scheduler, pool, dispatcher, metrics, stats, cluster=cluster)


def measured_costs(config: GatewayConfig) -> dict[tuple[str, str], TokenCost] | None:
    """The token costs `scheduler.tokens.profile` measured (a path as given, like
    predictor.path), None without one: every model then costs the hand-set table."""
    name = config.scheduler.tokens.profile
    return read_memory_costs(Path(name), name) if name else None


def with_device_capacity(config: GatewayConfig) -> GatewayConfig:
    """`config` with `tokens.capacity` = the CUDA device's memory minus
    `tokens.device_reserve_mb`, when that is set and the gateway runs on CUDA."""
    tokens = config.scheduler.tokens
    if tokens.device_reserve_mb is None:
        return config
    if resolve_device(config.device, "fp32", torch_cuda_available()) != "cuda":
        return config  # on CPU the configured capacity stands
    total = cuda_memory_mib()
    capacity = total - tokens.device_reserve_mb
    if capacity < 1:
        raise ConfigError(
            f"scheduler.tokens.device_reserve_mb: {tokens.device_reserve_mb} MiB leaves "
            f"nothing of the device's {total} MiB"
        )
    scheduler = config.scheduler.model_copy(
        update={"tokens": tokens.model_copy(update={"capacity": capacity})}
    )
    return config.model_copy(update={"scheduler": scheduler})
