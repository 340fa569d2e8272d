"""The experiment runner: config → traffic → scheduler → trace, summary, plots.

Simulate mode drives the scheduling core on a virtual clock (scheduling's
`simulate`); live mode sends the same arrivals to a real gateway over HTTP
(loadgen.live) and, with `live.twin`, simulates them too, reporting the
sim-vs-live difference. Both hand their finished jobs to the same report and plots.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from loadgen.arrivals import arrival_rate, capacity_jobs_per_s, poisson_arrivals
from loadgen.config import ConfigError, ExperimentConfig
from loadgen.plots import plot_all
from loadgen.report import JobArrays, format_summary, summarize, write_summary, write_trace
from predictor.memory_costs import read_memory_costs
from predictor.profile_table import ProfileError, ProfileTable
from predictor.progress import Progress, say
from scheduling.job import Job
from scheduling.lane_groups import ServiceModels, model_for
from scheduling.residency import SwapCounts
from scheduling.service_time import FixedServiceTime, ServiceTimeModel
from scheduling.simulator import Arrival, SimResult, simulate
from scheduling.tokens import TokenCost, TokenCosts
from workloads.registry import get_workload

if TYPE_CHECKING:
    from predictor.latency import LatencyPredictor


def build_service_model(config: ExperimentConfig) -> ServiceModels:
    """The simulator's service times: a profile, a fixed table or the learned predictor.

    Lane groups whose lanes run another thread count than the profile default
    (`service_time.threads`) get the profile's rows at their own count: one
    model per group name. A profile or the predictor is checked to cover the
    mix before anything runs.
    """
    st = config.service_time
    if st.fixed is not None:
        return FixedServiceTime({w: (e.base_ms, e.per_sample_ms) for w, e in st.fixed.items()})
    threads = {g.name: g.threads or st.threads for g in config.scheduler.groups()}
    models: dict[int | None, ServiceTimeModel] = {}
    for count in set(threads.values()):
        models[count] = _model_at(config, count)
    if len(models) == 1:
        return next(iter(models.values()))
    return {name: models[count] for name, count in threads.items()}


def _model_at(config: ExperimentConfig, threads: int | None) -> ServiceTimeModel:
    """The service-time truth at one thread count (None: the profile's only one)."""
    st = config.service_time
    if st.predictor:
        # The mean, not predictor.quantile: a lane takes the typical time (jitter adds
        # the spread); the quantile is a planning margin for the scheduler only.
        model = load_predictor(config).as_service_model(threads=threads or 1)
        _require_mix(config, model, "service_time.predictor")
        return model
    assert st.profile is not None  # the config guarantees exactly one source
    try:
        table = ProfileTable.from_csv(
            config.resolve_path(st.profile), threads=threads, stat=st.stat
        )
        table.require(
            (w, b, config.precision)
            for w in config.active_workloads()
            for b in config.active_backends()
        )
    except ProfileError as exc:
        raise ConfigError(f"{config.source}: service_time.profile: {exc}") from None
    return table


def check_runnable(config: ExperimentConfig) -> None:
    """Refuse what the runner cannot do, with a message naming the key.

    A configured predictor is loaded (or trained) here, so a bad file fails
    before anything runs; the result is cached for the simulation itself.
    """
    if not config.predictor.used:
        return
    if config.mode == "live" and config.service_time.predictor:
        # Named first: the advice below (leave the predictor out) would only lead here.
        raise ConfigError(
            f"{config.source}: service_time.predictor: the learned predictor times simulated "
            "lanes only; give service_time.profile or service_time.fixed for live runs"
        )
    if config.mode == "live":
        # The live gateway corrects its own service-time model online; a predictor
        # consulted only by the twin simulation would make the twin a different system.
        key = "train_from" if config.predictor.train_from else "path"
        raise ConfigError(
            f"{config.source}: predictor.{key}: the learned predictor drives mode: simulate "
            "only; leave predictor.path and predictor.train_from out for live runs"
        )
    load_predictor(config)


def load_predictor(config: ExperimentConfig) -> LatencyPredictor:
    """The configured predictor: read from predictor.path or trained from predictor.train_from.

    Memoised per file and its modification time, so `mlws compare` loads or
    trains it once for all its runs.
    """
    pc = config.predictor
    key = "train_from" if pc.train_from else "path"
    name = pc.train_from or pc.path
    assert name is not None  # called only when the config names a source
    path = config.resolve_path(name)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: predictor.{key}: cannot read {name}: {exc.strerror or exc}"
        ) from None
    stat = config.service_time.stat if config.service_time.profile else "mean_ms"
    try:
        return _cached_predictor(key, str(path), mtime, pc.model_type, stat, pc.quantile)
    except ValueError as exc:
        raise ConfigError(
            f"{config.source}: predictor.{key}: the learned predictor could not be "
            f"{'trained from' if key == 'train_from' else 'loaded from'} {name}: {exc}"
        ) from None


@lru_cache(maxsize=8)
def _cached_predictor(
    key: str, path: str, mtime_ns: int, model_type: str, stat: str, quantile: float | None
) -> LatencyPredictor:
    from predictor.latency import LatencyPredictor  # scikit-learn: only when enabled

    if key == "path":
        predictor = LatencyPredictor.load(path)
    else:
        quantiles = (quantile,) if quantile is not None else (0.95,)
        predictor = LatencyPredictor(model_type, quantiles=quantiles, stat=stat).train(path)
    if quantile is not None:
        predictor.as_service_model(quantile=quantile)  # an untrained quantile fails now
    return predictor


def _require_mix(config: ExperimentConfig, model: ServiceTimeModel, key: str) -> None:
    """Ask `model` about every combination of the mix now, not as an error mid-run."""
    try:
        for w in config.active_workloads():
            for b in config.active_backends():
                model.predict(w, b, config.precision, 1)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: {key}: cannot predict the mix: {exc}") from None


def build_policy_model(
    config: ExperimentConfig, service_model: ServiceModels
) -> tuple[ServiceModels, dict[str, Any] | None]:
    """What the scheduler believes, and a summary entry; (None, None) with no predictor.

    The predictor is asked at each lane group's thread count (its profile's, or
    service_time.threads), with no other lane counted busy: the conditions the
    profile rows were measured in.
    """
    if not config.predictor.used:
        return None, None
    predictor = load_predictor(config)
    pc = config.predictor
    beliefs: dict[str, ServiceTimeModel] = {}
    for group in config.scheduler.groups():
        truth = model_for(service_model, group.name)
        threads = getattr(truth, "threads", None) or config.service_time.threads or 1
        beliefs[group.name] = predictor.as_service_model(threads=threads, quantile=pc.quantile)
        _require_mix(config, beliefs[group.name], "predictor")
    info = {
        "used": True,
        "source": f"train_from: {pc.train_from}" if pc.train_from else f"path: {pc.path}",
        "model_type": predictor.model_type,
        "stat": predictor.stat,
        "quantile": pc.quantile,
        "threads": {name: m.threads for name, m in beliefs.items()},
        "trained": predictor.info,
    }
    return beliefs, info


def measured_costs(config: ExperimentConfig) -> dict[tuple[str, str], TokenCost] | None:
    """The token costs `scheduler.tokens.profile` measured, None without one (every model
    costs the hand-set table); ConfigError for a bad file or a capacity that cannot
    hold a one-sample dispatch of the mix."""
    name = config.scheduler.tokens.profile
    if not name:
        return None
    try:
        measured = read_memory_costs(config.resolve_path(name), name)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None
    costs = TokenCosts({w: get_workload(w).spec.token_base for w in config.workload_mix}, measured)
    capacity = config.scheduler.tokens.capacity
    for w in config.active_workloads():
        cost = costs.cost(w, config.precision)
        if cost.tokens(1) > capacity:
            raise ConfigError(
                f"{config.source}: scheduler.tokens.capacity: {capacity} tokens cannot hold "
                f"even a one-sample {w} dispatch ({cost.tokens(1)}, {cost.source})"
            )
    return measured


@dataclass(frozen=True)
class SimRun:
    """One simulation and its aggregate numbers."""

    result: SimResult
    arrays: JobArrays
    summary: dict[str, Any]
    wall_s: float


def simulate_run(
    config: ExperimentConfig,
    arrivals: Sequence[Arrival],
    service_model: ServiceModels,
    *,
    info: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimRun:
    """Simulate `arrivals` under `config.scheduler` and summarise the jobs.

    The throughput window runs to the last event, not just the arrival span:
    an overloaded run is credited only with the work it really finished. With a
    predictor configured the scheduler believes the learned predictor while
    `service_model` (the profile, or the predictor's mean with
    service_time.predictor) keeps driving the lanes.
    """
    policy_model, predictor_info = build_policy_model(config, service_model)
    started = time.perf_counter()
    result = simulate(
        config.scheduler,
        arrivals,
        service_model,
        {w: get_workload(w).spec.token_base for w in config.workload_mix},
        jitter=config.jitter,
        seed=config.seed,
        policy_model=policy_model,
        cores=config.cores(),
        request_cpu_s=config.service_time.request_cpu_ms / 1e3,
        progress=progress,
        topology=config.cluster.topology(),
        measured_costs=measured_costs(config),
    )
    wall_s = time.perf_counter() - started
    arrays = JobArrays.from_jobs(result.jobs)
    samples = int(arrays.samples[arrays.ok].sum())
    extra = {
        **(info or {}),
        "policy": config.scheduler.policy,
        "arrivals": len(arrivals),
        "dispatches": result.dispatches,
        "mean_dispatch_samples": samples / result.dispatches if result.dispatches else None,
        "sim_time_s": result.sim_time,
        "topology": topology_summary(config),
        "swaps": swaps_summary(config, result.swaps),
    }
    if predictor_info is not None:
        extra["predictor"] = predictor_info
    window = max(config.duration_s, result.sim_time)
    summary = summarize(arrays, config.model_dump(mode="json"), window, extra=extra)
    return SimRun(result=result, arrays=arrays, summary=summary, wall_s=wall_s)


def topology_summary(config: ExperimentConfig) -> dict[str, Any]:
    """The simulated cluster for summary.json: nodes, lanes in all, network hop."""
    cluster = config.cluster
    return {
        "nodes": cluster.nodes,
        "lanes": cluster.nodes * config.scheduler.lanes,
        "network_ms": cluster.network_ms,
    }


def swaps_summary(config: ExperimentConfig, swaps: SwapCounts) -> dict[str, Any]:
    """Model swaps under a lane budget for summary.json: loads, evictions, the seconds
    lanes spent loading, and that time's share of the lanes' run time."""
    lane_s = config.cluster.nodes * config.scheduler.lanes * config.duration_s
    return {
        "lane_budget_mb": config.scheduler.tokens.lane_budget,
        "loads": swaps.loads,
        "evictions": swaps.evictions,
        "load_s": swaps.load_s,
        "load_share": swaps.load_s / lane_s if lane_s else 0.0,
    }


def make_run_id(config: ExperimentConfig, now: datetime | None = None) -> str:
    """`<name>-<YYYYmmdd-HHMMSS>-<seed>` (the runner may read the wall clock; the core may not)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{config.name}-{stamp}-{config.seed}"


def fresh_run_dir(root: Path, run_id: str) -> Path:
    """root/run_id, or run_id-2, -3… if a run with that id already exists."""
    candidate, n = root / run_id, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{run_id}-{n}"
    candidate.mkdir(parents=True)
    return candidate


def write_config_copy(config: ExperimentConfig, path: Path) -> Path:
    """The resolved config (defaults included) as YAML: enough to re-run the experiment."""
    header = f"# Resolved copy of {config.source} (defaults filled in).\n"
    body = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    path.write_text(header + body)
    return path


@dataclass(frozen=True)
class RunOutcome:
    """What one run produced, simulated or live; `twin` is a live run's simulated twin."""

    jobs: list[Job]
    arrays: JobArrays
    summary: dict[str, Any]
    how: str
    twin: JobArrays | None = None


def live_run(
    config: ExperimentConfig,
    arrivals: Sequence[Arrival],
    service_model: ServiceModels,
    *,
    info: dict[str, Any],
    url: str | None = None,
    show_progress: bool = False,
) -> RunOutcome:
    """Drive a real gateway with `arrivals`; the summary gains `sim_vs_live` with a twin."""
    from loadgen.live import run_live, sim_vs_live

    started = time.perf_counter()
    jobs = run_live(config, arrivals, url=url, show_progress=show_progress)
    arrays = JobArrays.from_jobs(jobs)
    extra = {
        **info,
        "policy": config.scheduler.policy,
        "arrivals": len(arrivals),
        "wall_s": time.perf_counter() - started,
        "target": url or config.live.url,
    }
    ends = [j.end for j in jobs if j.end is not None]
    window = max([config.duration_s, *ends])
    summary = summarize(arrays, config.model_dump(mode="json"), window, extra=extra)
    how = f"sent live to {url or config.live.url or 'a started gateway'}"
    if not config.live.twin:
        return RunOutcome(jobs, arrays, summary, how)
    with _counting(len(arrivals), "simulated twin", show_progress) as progress:
        twin = simulate_run(config, arrivals, service_model, info=info, progress=progress)
    summary["sim_vs_live"] = sim_vs_live(summary, twin.summary)
    return RunOutcome(jobs, arrays, summary, how, twin=twin.arrays)


@contextlib.contextmanager
def _counting(total: int, label: str, show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A simulation's progress callback: a bar or percent lines, or None when quiet."""
    if not show:
        yield None
        return
    with Progress(total, label, unit="arrival", steps=False) as bar:
        yield lambda done, _total: bar.advance_to(done)
        bar.advance_to(total)  # the simulator reports about every 1 %, not the last arrival


def _simulated(
    config: ExperimentConfig,
    arrivals: Sequence[Arrival],
    model: ServiceModels,
    info: dict[str, Any],
    show_progress: bool,
) -> RunOutcome:
    with _counting(len(arrivals), "simulate", show_progress) as progress:
        run = simulate_run(config, arrivals, model, info=info, progress=progress)
    how = f"simulated {run.result.sim_time:.1f}s in {run.wall_s:.2f}s"
    return RunOutcome(run.result.jobs, run.arrays, run.summary, how)


def _write_results(config: ExperimentConfig, run: RunOutcome, out: Path) -> None:
    """trace.csv, summary.json, config.yaml and plots/ (with sim_vs_live.png for a twin)."""
    write_trace(run.jobs, out / "trace.csv", arrays=run.arrays)
    write_summary(run.summary, out / "summary.json")
    write_config_copy(config, out / "config.yaml")
    title = f"{config.name} ({config.scheduler.policy})"
    plot_all(run.arrays, out / "plots", title=title)
    if run.twin is not None:
        from loadgen.sim_vs_live_plot import PLOT_NAME, plot_sim_vs_live

        slos = run.summary["slo_ms"]
        plot_sim_vs_live(run.arrays, run.twin, out / "plots" / PLOT_NAME, slos, title)


def run_experiment(
    config: ExperimentConfig,
    out_root: str | Path = "results",
    run_id: str | None = None,
    *,
    quiet: bool = False,
    url: str | None = None,
) -> Path:
    """Run one experiment and write trace.csv, summary.json, config.yaml and plots/.

    Returns the run directory `out_root/<run_id>`. Raises ConfigError for a
    config the runner cannot execute (missing profile rows). Unless `quiet`, the
    steps are reported on stderr as they happen and the results printed at the end.
    """
    note = (lambda _text: None) if quiet else say
    if config.predictor.train_from:
        note(f"training the latency predictor on {config.predictor.train_from}")
    check_runnable(config)
    model = build_service_model(config)
    rate = arrival_rate(config, model)
    info: dict[str, Any] = {
        "source": config.source,
        "arrival_rate_jobs_per_s": rate,
        "capacity_jobs_per_s": capacity_jobs_per_s(config, model),
    }
    arrivals = poisson_arrivals(config, rate, config.duration_s, config.seed)
    note(
        f"{config.name}: {len(arrivals):,} arrivals over {config.duration_s:g} s at "
        f"{rate:.2f} jobs/s ({'live' if config.mode == 'live' else 'simulated'})"
    )
    if config.mode == "live":
        run = live_run(config, arrivals, model, info=info, url=url, show_progress=not quiet)
    else:
        run = _simulated(config, arrivals, model, info, not quiet)
    out = fresh_run_dir(Path(out_root), run_id or make_run_id(config))
    run.summary["run"]["run_id"] = out.name
    note(f"writing trace.csv, summary.json, config.yaml and plots/ to {out}")
    _write_results(config, run, out)
    if not quiet:
        print(
            f"{config.name}: policy={config.scheduler.policy} "
            f"lanes={config.scheduler.lanes * config.cluster.nodes} "
            f"rate={rate:.2f} jobs/s (load {rate / info['capacity_jobs_per_s']:.2f}) "
            f"jobs={len(arrivals)} {run.how}"
        )
        print(format_summary(run.summary))
        if "sim_vs_live" in run.summary:
            from loadgen.live import format_sim_vs_live

            print(format_sim_vs_live(run.summary["sim_vs_live"]))
        print(f"results: {out}")
    return out
