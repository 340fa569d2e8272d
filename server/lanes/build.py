"""From the gateway config to its lanes: what each worker loads, and a lane of each
group's kind per configured lane (not started).

The models come from the caller's catalogue (name → `Workload`), so workers get
the very objects the gateway serves and register nothing anywhere; how many
samples a dispatch may carry, the size lanes warm up at and size their shared
memory for, is asked of the scheduling core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from server.lanes.base import Lane, RunnerSpec, WorkerSpec
from server.lanes.pool import LaneWorkers
from server.lanes.process_lane import ProcessLane
from server.lanes.thread_lane import ThreadLane
from workloads.registry import Workload

if TYPE_CHECKING:
    from scheduling.scheduler import Scheduler
    from server.config import GatewayConfig, ModelConfig


def runner_specs(
    config: GatewayConfig, workloads: Mapping[str, Workload], scheduler: Scheduler
) -> tuple[RunnerSpec, ...]:
    """One RunnerSpec per configured model × backend × precision."""
    return tuple(
        r for model in config.models for r in model_runners(model, workloads[model.name], scheduler)
    )


def model_runners(
    model: ModelConfig, workload: Workload, scheduler: Scheduler
) -> tuple[RunnerSpec, ...]:
    """One RunnerSpec per backend × precision of `model` (the scheduling core must know
    the model: it says how many samples a dispatch may carry)."""
    return tuple(
        RunnerSpec(
            workload=workload,
            backend=backend,
            precision=precision,
            max_samples=scheduler.largest_dispatch(model.name, precision),
            weights=model.weights,
        )
        for backend in model.backends
        for precision in model.precisions
    )


def worker_specs(
    config: GatewayConfig, runners: tuple[RunnerSpec, ...], scheduler: Scheduler
) -> list[WorkerSpec]:
    """One WorkerSpec per lane, lane groups in order (the core numbers lanes so too).
    Under a lane budget a lane loads those of `runners` that the core books for it
    (`Scheduler.preload`), and any other later, on demand."""
    out: list[WorkerSpec] = []
    for group in config.scheduler.groups():
        for _ in range(group.count):
            held = set(scheduler.preload(len(out), [r.key for r in runners], 0.0))
            out.append(
                WorkerSpec(
                    lane=len(out),
                    runners=tuple(r for r in runners if r.key in held),
                    threads=config.lanes.threads(group),
                    device=config.device,
                    seed=config.seed,
                    onnx_dir=config.onnx_dir,
                    group=group.name,
                    priority=group.priority,
                    plugins=config.plugins,
                )
            )
    return out


def build_pool(
    config: GatewayConfig, workloads: Mapping[str, Workload], scheduler: Scheduler
) -> LaneWorkers:
    """The configured lanes (not started), each of its group's kind (or lanes.kind);
    joins (or starts) the Ray cluster first if any lane is a Ray lane."""
    kinds = {g.name: g.kind or config.lanes.kind for g in config.scheduler.groups()}
    if "ray" in kinds.values():
        # Imported only here: a gateway without Ray lanes never loads Ray.
        from server.lanes.ray_cluster import connect

        connect(config.lanes.ray.address)
    lanes: list[Lane] = []
    runners = runner_specs(config, workloads, scheduler)
    for worker in worker_specs(config, runners, scheduler):
        if kinds[worker.group] == "process":
            lanes.append(ProcessLane(worker, config.lanes.start_timeout_s))
        elif kinds[worker.group] == "ray":
            lanes.append(ray_lane(config, worker))
        else:
            lanes.append(ThreadLane(worker))
    return LaneWorkers(lanes, catalogue={r.key: r for r in runners})


def ray_lane(config: GatewayConfig, spec: WorkerSpec, node: str | None = None) -> Lane:
    """A Ray lane for `spec` (not started) with the config's lanes.ray resources, pinned to
    `node` (None: spread by Ray). The cluster must be joined first (build_pool does)."""
    from server.lanes.ray_lane import RayLane

    ray = config.lanes.ray
    return RayLane(
        spec,
        node_wanted=node,
        num_gpus=ray.num_gpus,
        resources=ray.resources,
        start_timeout_s=config.lanes.start_timeout_s,
    )
