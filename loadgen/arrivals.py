"""Seeded Poisson traffic for the simulator, and the capacity that `load` refers to.

Arrivals are drawn column by column with one numpy Generator (vectorised: a
million arrivals cost a few numpy calls plus the `Arrival` objects
themselves), so a seed always yields the same trace.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadgen.config import ExperimentConfig
from scheduling.lane_groups import ServiceModels, model_for
from scheduling.service_time import ServiceTimeModel
from scheduling.simulator import Arrival


@dataclass(frozen=True)
class ArrivalColumns:
    """A trace as columns: the vectorised form `poisson_arrivals` builds objects from."""

    #: Arrival times, seconds, ascending.
    time: np.ndarray
    #: Index into `workloads` / `backends` per arrival.
    workload: np.ndarray
    backend: np.ndarray
    interactive: np.ndarray  # bool
    samples: np.ndarray  # int
    workloads: tuple[str, ...]
    backends: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.time)


def _probabilities(weights: dict[str, float]) -> tuple[tuple[str, ...], np.ndarray]:
    names = tuple(n for n, w in weights.items() if w > 0)
    p = np.array([weights[n] for n in names], dtype=float)
    return names, p / p.sum()


def draw_columns(
    config: ExperimentConfig, rate: float, duration_s: float, seed: int
) -> ArrivalColumns:
    """Draw a Poisson trace of `rate` jobs/s over [0, duration_s) as columns.

    Given the count N ~ Poisson(rate × duration), the times of a homogeneous
    Poisson process are N sorted uniforms: one sort instead of a cumulative
    sum of exponentials that would need an unknown length up front.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration_s must be > 0, got {rate} and {duration_s}")
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * duration_s))
    time = np.sort(rng.uniform(0.0, duration_s, size=n))
    workloads, pw = _probabilities(config.workload_mix)
    backends, pb = _probabilities(config.backends)
    interactive = rng.random(n) < config.interactive_ratio
    samples = np.empty(n, dtype=np.int64)
    n_int = int(interactive.sum())
    samples[interactive] = config.batch_sizes.interactive.sample(rng, n_int)
    samples[~interactive] = config.batch_sizes.batch.sample(rng, n - n_int)
    return ArrivalColumns(
        time=time,
        workload=rng.choice(len(workloads), size=n, p=pw),
        backend=rng.choice(len(backends), size=n, p=pb),
        interactive=interactive,
        samples=samples,
        workloads=workloads,
        backends=backends,
    )


def to_arrivals(config: ExperimentConfig, cols: ArrivalColumns) -> list[Arrival]:
    """`Arrival` objects for a column trace, with the config's precision and SLOs."""
    slo_i, slo_b = config.slo_ms.interactive / 1000.0, config.slo_ms.batch / 1000.0
    precision = config.precision
    workloads, backends = cols.workloads, cols.backends
    # One pass over plain python lists: tolist() once per column is ~10x cheaper
    # than indexing numpy scalars a million times.
    return [
        Arrival(
            t,
            workloads[w],
            backends[b],
            precision,
            "interactive" if i else "batch",
            s,
            slo_i if i else slo_b,
        )
        for t, w, b, i, s in zip(
            cols.time.tolist(),
            cols.workload.tolist(),
            cols.backend.tolist(),
            cols.interactive.tolist(),
            cols.samples.tolist(),
            strict=True,
        )
    ]


def poisson_arrivals(
    config: ExperimentConfig, rate: float, duration_s: float, seed: int
) -> list[Arrival]:
    """A seeded Poisson trace: `rate` jobs/s over `duration_s` seconds, time-ordered.

    Class, workload, backend and sample count are drawn independently per
    arrival from the config's interactive_ratio, workload_mix, backends and
    batch_sizes; the deadline budget is the class's slo_ms.
    """
    return to_arrivals(config, draw_columns(config, rate, duration_s, seed))


def job_service_s(
    model: ServiceTimeModel,
    config: ExperimentConfig,
    workload: str,
    backend: str,
    samples: int,
    *,
    hop_s: float = 0.0,
) -> float:
    """Service time of one job run alone, split as the scheduler would split it.

    A job larger than `scheduler.max_dispatch_samples` (m) runs as ⌊s/m⌋ parts
    of m samples plus one part of the remainder. With `hop_s`, each part also holds
    its lane that long (a cluster's network hop).
    """
    m = config.scheduler.max_dispatch_samples or samples
    full, rest = divmod(samples, m)
    t = full * model.predict(workload, backend, config.precision, m) if full else 0.0
    if rest:
        t += model.predict(workload, backend, config.precision, rest)
    if hop_s:
        t += hop_s * (full + (1 if rest else 0))
    return t


def mean_job_service_s(
    config: ExperimentConfig, model: ServiceModels, *, cpu: bool = False
) -> float:
    """E[S]: expected service time of one unbatched job under the config's mix.

        E[S] = Σ_w p_w Σ_b p_b Σ_c p_c Σ_s p_c(s) · T_c(w, b, s) · k_c

    over workloads w (workload_mix), backends b (backends), classes c
    (interactive_ratio) and sample counts s (batch_sizes[c]); T_c is
    `job_service_s` on the model of the lane group running class c. k_c is 1,
    or with `cpu` the group's threads per lane (CPU-seconds instead of seconds).
    Without `cpu`, T_c includes a cluster's network hop per dispatch (the lane is
    held for it; the CPU is not). The distributions are finite, so this is exact.
    """
    hop = 0.0 if cpu else config.cluster.network_ms / 1e3
    workloads, pw = _probabilities(config.workload_mix)
    backends, pb = _probabilities(config.backends)
    ratio = config.interactive_ratio
    classes = (
        ("interactive", ratio, config.batch_sizes.interactive),
        ("batch", 1.0 - ratio, config.batch_sizes.batch),
    )
    groups = {c: g for g in config.scheduler.groups() for c in g.classes}
    total = 0.0
    for w, p_w in zip(workloads, pw, strict=True):
        for b, p_b in zip(backends, pb, strict=True):
            for job_class, p_c, dist in classes:
                if p_c == 0:
                    continue
                group = groups[job_class]
                of_class = model_for(model, group.name)
                assert of_class is not None
                weight = (group.threads or 1) if cpu else 1
                sizes, ps = dist.support()
                times = [job_service_s(of_class, config, w, b, int(s), hop_s=hop) for s in sizes]
                total += p_w * p_b * p_c * weight * float(np.dot(ps, times))
    return total


def capacity_jobs_per_s(config: ExperimentConfig, service_model: ServiceModels) -> float:
    """Jobs/s the lanes can serve without batching: lanes ÷ E[S], or cores ÷ E[CPU·s].

    With `lanes` executors each busy E[S] seconds per job (see
    `mean_job_service_s`), the system saturates at lanes / E[S] jobs/s. When
    the lanes share `service_time.cores` CPUs, the CPUs saturate first: at
    cores / E[S · threads] jobs/s. `load` is the arrival rate as a fraction of
    that. Micro-batching and token limits are ignored on purpose: merging can
    raise the real capacity above this and tokens can lower it, which is
    exactly what the experiments measure. A cluster (`cluster.nodes`) has that
    capacity on every node, and a network hop holds lanes longer: with cores, the
    lanes may then saturate before the CPUs.
    """
    cores = config.cores()
    mean_s = mean_job_service_s(config, service_model, cpu=cores is not None)
    if mean_s <= 0:
        raise ValueError("the service model predicts zero service time: capacity is unbounded")
    nodes = config.cluster.nodes  # identical nodes: lanes and cores are per node
    lanes = config.scheduler.lanes
    if cores is None:
        return nodes * lanes / mean_s
    per_node = min(cores, lanes) / mean_s
    if config.cluster.network_ms:
        per_node = min(per_node, lanes / mean_job_service_s(config, service_model))
    return nodes * per_node


def arrival_rate(config: ExperimentConfig, service_model: ServiceModels) -> float:
    """The config's arrival rate in jobs/s: `arrival_rate`, or `load` × capacity."""
    if config.arrival_rate is not None:
        return config.arrival_rate
    assert config.load is not None  # the config guarantees exactly one of the two
    return config.load * capacity_jobs_per_s(config, service_model)
