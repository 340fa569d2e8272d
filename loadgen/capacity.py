"""`mlws capacity`: per class, the highest arrival rate that still meets an SLO target.

The traffic mix of an experiment config (class ratio, batch sizes, workloads,
backends) stays fixed; only the Poisson arrival rate moves. Each probe runs the
mix at one rate — in the simulator, or against a live gateway (`--url`) with
the simulated twin on the very same arrivals — and records per class the
attainment: the fraction of *all* sent jobs of that class that ended ok within
their SLO (refused, shed, late and failed jobs are misses).

The search brackets (doubling up or halving down from the config's own rate)
and then bisects geometrically until the bracket is within `tolerance`.
Attainment is not strictly monotone in the rate under sampling noise, so every
probe reuses the same seeds, and the answer is the highest rate that passed
with a failed probe above it (`bracket`), never an interpolation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadgen.arrivals import capacity_jobs_per_s, poisson_arrivals
from loadgen.capacity_output import format_probe, format_table, last_line, write_outputs
from loadgen.client import run_load
from loadgen.config import ConfigError, ExperimentConfig
from loadgen.experiment import build_service_model, check_runnable, fresh_run_dir, simulate_run
from loadgen.report import summarize
from scheduling.job import JOB_CLASSES, Job

Points = list[tuple[float, bool]]  # (rate, passed) of one class


@dataclass(frozen=True)
class SearchSettings:
    """How far and how finely the rate search goes (rates in jobs/s of the whole mix)."""

    target: float  # fraction of a class's sent jobs that must end ok within their SLO
    tolerance: float  # bisection stops once first_fail / capacity - 1 <= tolerance
    max_probes: int  # new probes per class (another class's probes are reused free)
    min_rate: float  # failing here: no capacity ("lower" bound)
    max_rate: float  # passing here: capacity >= max_rate ("upper" bound)
    start_rate: float  # the config's own rate, clipped into the bounds
    max_time_s: float  # wall-clock budget; a probe that might overrun it is not started


@dataclass(frozen=True)
class Probe:
    """One probed rate: per-class numbers of the run and, live, of its simulated twin."""

    index: int  # order in which the probe ran, from 0
    rate: float  # offered arrival rate of the whole mix, jobs/s
    duration_s: float  # seconds of arrivals per seed
    classes: dict[str, dict[str, Any]]  # class → class_stats(), pooled over the seeds
    twin: dict[str, dict[str, Any]] | None  # the twin's, on the same arrivals (live only)
    jobs: int  # jobs sent over all seeds
    wall_s: float  # wall-clock seconds the probe took (reporting only)


@dataclass
class Prober:
    """Runs the config's mix at a given rate: simulated, or live against `url` plus a twin."""

    config: ExperimentConfig
    model: Any  # the service model(s) of build_service_model
    seeds: tuple[int, ...]
    duration_s: float  # seconds of arrivals per seed (at least, with min_jobs)
    url: str | None = None
    timeout_s: float = 30.0  # per live request: later than the slowest SLO is a miss anyway
    min_jobs: int = 0  # simulate long enough to expect this many jobs of each class
    count: int = 0

    @property
    def cost_s(self) -> float:
        """Worst-case wall seconds of one probe (0 in the simulator: it cannot be bounded)."""
        return len(self.seeds) * (self.duration_s + self.timeout_s) if self.url else 0.0

    def span_s(self, rate: float) -> float:
        """Seconds of arrivals at `rate`: a 99 % target judged on 30 jobs is mostly noise."""
        ratio = self.config.interactive_ratio
        rarest = min((f for f in (ratio, 1 - ratio) if f > 0), default=1.0)
        return max(self.duration_s, self.min_jobs / (rate * rarest))

    def __call__(self, rate: float) -> Probe:
        started, span = time.perf_counter(), self.span_s(rate)
        jobs: list[Job] = []
        twin: list[Job] = []
        for seed in self.seeds:
            config = self.config.model_copy(update={"seed": seed})  # jitter follows the seed
            arrivals = poisson_arrivals(config, rate, span, seed)
            if self.url and arrivals:
                # Live first: simulating the twin must not delay the sends.
                jobs += run_load(self.url, arrivals, timeout_s=self.timeout_s)
                twin += simulate_run(config, arrivals, self.model).result.jobs
            elif arrivals:
                jobs += simulate_run(config, arrivals, self.model).result.jobs
        if self.url and self.count == 0 and jobs and all(j.outcome == "error" for j in jobs):
            # Later on, an overwhelmed gateway may time out everything: that is a result.
            raise ConfigError(
                f"--url: every request of the first probe to {self.url} failed or timed out; "
                f"does it serve {', '.join(self.config.active_workloads())}?"
            )
        self.count += 1
        return Probe(
            index=self.count - 1,
            rate=rate,
            duration_s=span,
            classes=class_stats(jobs, span),
            twin=class_stats(twin, span) if self.url else None,
            jobs=len(jobs),
            wall_s=time.perf_counter() - started,
        )


def class_stats(jobs: Sequence[Job], window_s: float) -> dict[str, dict[str, Any]]:
    """Per class: jobs, attainment, P99 e2e (ms) and refused/shed/error counts."""
    summary = summarize(jobs, {}, window_s)
    out: dict[str, dict[str, Any]] = {}
    for cls in JOB_CLASSES:
        group = summary["classes"][cls]
        outcomes = [j.outcome for j in jobs if j.job_class == cls]
        out[cls] = {
            "jobs": group["jobs"],
            "attainment": group["slo"]["attainment"],
            "p99_e2e_ms": group["latency_ms"]["e2e"]["p99"],
            "rejected": outcomes.count("rejected"),
            "shed": outcomes.count("shed"),
            "errors": outcomes.count("error"),
        }
    return out


# ----------------------------------------------------------------------------- search
def points(probes: Sequence[Probe], cls: str, target: float, twin: bool = False) -> Points:
    """(rate, passed) of every probe where the class had jobs (no jobs: no evidence)."""
    out = []
    for p in probes:
        attainment = ((p.twin if twin else p.classes) or {}).get(cls, {}).get("attainment")
        if attainment is not None:
            out.append((p.rate, attainment >= target))
    return out


def bracket(pts: Points) -> tuple[float | None, float | None]:
    """(capacity, first failure): the highest passing rate with a failure above it.

    With no failure at all the capacity is the highest pass (a lower bound);
    with no pass below the failures it is None (the class fails everywhere probed).
    """
    fails = sorted(r for r, ok in pts if not ok)
    passes = [r for r, ok in pts if ok]
    if not fails:
        return (max(passes) if passes else None), None
    lo = max((r for r in passes if r < fails[-1]), default=None)
    hi = min(r for r in fails if lo is None or r > lo)
    return lo, hi


def next_rate(pts: Points, s: SearchSettings) -> float | None:
    """The next rate to probe for one class, or None once it is bracketed or bounded."""
    lo, hi = bracket(pts)
    if hi is None:  # no failure yet: start, then double up to the bound
        rate = s.start_rate if lo is None else min(2 * lo, s.max_rate) if lo < s.max_rate else None
    elif lo is None:  # no pass yet: halve down to the bound
        rate = max(hi / 2, s.min_rate) if hi > s.min_rate else None
    else:  # bracketed: geometric bisection, as the tolerance is relative
        rate = math.sqrt(lo * hi) if hi / lo - 1 > s.tolerance else None
    return None if rate is None else _round(rate)


def _round(rate: float) -> float:
    """6 significant digits: rates print, compare and cache the same everywhere."""
    return float(f"{rate:.6g}")


def search(
    prober: Callable[[float], Probe],
    s: SearchSettings,
    *,
    cost_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[Probe], None] | None = None,
) -> tuple[list[Probe], dict[str, str]]:
    """Search each class in turn; returns every probe (in order) and why each class stopped.

    The classes share probes: a rate probed for one is evidence for the other.
    `cost_s` is the worst-case duration of a probe, checked against the time left.
    """
    probes: dict[float, Probe] = {}
    started, stopped = clock(), {}
    for cls in JOB_CLASSES:
        made, stopped[cls] = 0, "converged"
        # `rate in probes` only happens for a class without jobs there: nothing to learn.
        while (rate := next_rate(points(list(probes.values()), cls, s.target), s)) not in (
            None,
            *probes,
        ):
            if made == s.max_probes or clock() - started + cost_s > s.max_time_s:
                stopped[cls] = "max_probes" if made == s.max_probes else "max_time"
                break
            probes[rate] = prober(rate)
            made += 1
            if log is not None:
                log(probes[rate])
    return list(probes.values()), stopped


def class_answer(
    probes: Sequence[Probe],
    cls: str,
    s: SearchSettings,
    per_job: float,
    capacity: float,
    *,
    twin: bool = False,
) -> dict[str, Any]:
    """One class's capacity and the numbers at that rate, from the probes (or the twin's)."""
    pts = points(probes, cls, s.target, twin=twin)
    lo, hi = bracket(pts)
    at = next((p for p in probes if p.rate == lo), None)
    stats = ((at.twin if twin else at.classes) or {}).get(cls, {}) if at else {}
    bound = None if pts else "no_jobs"
    if lo is not None and hi is None:
        bound = "upper"  # never failed: the capacity is at least lo
    elif lo is None and hi is not None:
        bound = "lower"  # failed even at the lowest rate probed
    return {
        "capacity_jobs_per_s": lo,
        "capacity_samples_per_s": None if lo is None else lo * per_job,
        "load": None if lo is None else lo / capacity,
        "attainment": stats.get("attainment"),
        "p99_e2e_ms": stats.get("p99_e2e_ms"),
        "first_fail_jobs_per_s": hi,
        "bound": bound,
        # A failure below the capacity or a pass above the first failure: noise or a
        # real non-monotone response; either way worth a look (or more --seeds).
        "non_monotone": any(
            (not ok and lo is not None and r < lo) or (ok and hi is not None and r > hi)
            for r, ok in pts
        ),
    }


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class CapacityRequest:
    """The validated `mlws capacity` options (loads are fractions of the unbatched capacity)."""

    target: float
    tolerance: float
    max_probes: int
    seeds: int
    min_load: float
    max_load: float
    max_time_s: float
    duration_s: float | None  # per probe and seed: --probe-s live, else --duration-s
    url: str | None
    out: Path | None


#: option → (type, check, what the check requires)
_CHECKS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "target": (float, lambda v: 0 < v < 1, "must be in (0, 1)"),
    "tolerance": (float, lambda v: 0 < v < 1, "must be in (0, 1)"),
    "max_probes": (int, lambda v: v >= 1, "must be >= 1"),
    "seeds": (int, lambda v: v >= 1, "must be >= 1"),
    "min_load": (float, lambda v: v > 0, "must be > 0"),
    "max_load": (float, lambda v: 0 < v <= 100, "must be in (0, 100]"),
    "max_time": (float, lambda v: v > 0, "must be > 0"),
    "probe_s": (float, lambda v: v > 0, "must be > 0"),
    "duration_s": (float, lambda v: v > 0, "must be > 0"),
}


def _option(args: Any, name: str) -> Any:
    """One numeric option, or a ConfigError naming it (`--max-probes: 0 must be >= 1`)."""
    kind, ok, what = _CHECKS[name]
    flag, text = "--" + name.replace("_", "-"), getattr(args, name)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        kind_name = "an integer" if kind is int else "a number"
        raise ConfigError(f"{flag}: {text!r} is not {kind_name}") from None
    if not (math.isfinite(value) and ok(value)):
        raise ConfigError(f"{flag}: {value} {what}")
    return value


def check_url(url: str) -> str:
    """The base URL without a trailing slash, or a ConfigError naming --url."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--url: {url!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"--url: {url!r} is not an http:// or https:// URL with a host")
    return url.rstrip("/")


def check_ready(url: str) -> None:
    """Ask the gateway's /readyz once: a wrong URL should fail now, not as 0 % attainment."""
    try:
        status = httpx.get(f"{url}/readyz", timeout=5.0).status_code
    except httpx.HTTPError as exc:
        raise ConfigError(f"--url: cannot reach {url}: {exc or type(exc).__name__}") from None
    if status != 200:
        raise ConfigError(f"--url: {url} is not ready (/readyz answered {status})")


def parse_request(args: Any) -> CapacityRequest:
    """Validate the options before the config is read; each error names its option."""
    v = {name: _option(args, name) for name in _CHECKS if getattr(args, name) is not None}
    if v["min_load"] >= v["max_load"]:
        raise ConfigError(f"--min-load: {v['min_load']} must be below --max-load {v['max_load']}")
    url = check_url(args.url) if args.url is not None else None
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: no such file: {args.config}")
    return CapacityRequest(
        **{k: v[k] for k in ("target", "tolerance", "max_probes", "seeds", "min_load")},
        max_load=v["max_load"],
        max_time_s=v["max_time"],
        duration_s=v["probe_s"] if url else v.get("duration_s"),
        url=url,
        out=Path(args.out) if args.out else None,
    )


# ----------------------------------------------------------------------------- running
def mean_samples_per_job(config: ExperimentConfig) -> float:
    """E[samples] of one job of the mix: turns jobs/s into offered samples/s."""
    sizes, ratio = config.batch_sizes, config.interactive_ratio
    means = [float(np.dot(*d.support())) for d in (sizes.interactive, sizes.batch)]
    return ratio * means[0] + (1 - ratio) * means[1]


def make_settings(
    config: ExperimentConfig, request: CapacityRequest, capacity: float
) -> SearchSettings:
    """Search bounds in jobs/s: the requested loads times the unbatched capacity."""
    own_rate = config.arrival_rate or (config.load or 1.0) * capacity
    # Rounded like every probed rate (next_rate), so a probe at a bound *is* the bound.
    low, high = (_round(x * capacity) for x in (request.min_load, request.max_load))
    return SearchSettings(
        target=request.target,
        tolerance=request.tolerance,
        max_probes=request.max_probes,
        min_rate=low,
        max_rate=high,
        start_rate=_round(min(max(own_rate, low), high)),
        max_time_s=request.max_time_s,
    )


def make_prober(config: ExperimentConfig, request: CapacityRequest, model: Any) -> Prober:
    """The probe runner: seeds config.seed, +1, …; live requests time out after 3 slowest SLOs."""
    slowest_slo_s = max(config.slo_ms.interactive, config.slo_ms.batch) / 1000
    return Prober(
        config,
        model,
        seeds=tuple(config.seed + i for i in range(request.seeds)),
        duration_s=request.duration_s or config.duration_s,
        url=request.url,
        # Waiting past a miss would only spend the time budget and let queued work spill
        # into the next probe (the gateway drops a queued job whose client went away).
        timeout_s=min(config.live.request_timeout_s, max(1.0, 3 * slowest_slo_s)),
        # Unless --duration-s fixes it: ~2 misses of headroom at the target (200 at 99 %).
        min_jobs=0 if request.duration_s else math.ceil(2 / (1 - request.target)),
    )


def run_capacity(
    config: ExperimentConfig, request: CapacityRequest, *, quiet: bool = False
) -> tuple[dict[str, Any], Path]:
    """Search, write capacity.json, probes.csv and capacity.png; returns (report, out dir)."""
    config = config.model_copy(update={"mode": "live" if request.url else "simulate"})
    check_runnable(config)
    model = build_service_model(config)
    capacity, per_job = capacity_jobs_per_s(config, model), mean_samples_per_job(config)
    if request.url:
        check_ready(request.url)
    settings = make_settings(config, request, capacity)
    prober = make_prober(config, request, model)

    def log(p: Probe) -> None:
        if not quiet:
            print(format_probe(probe_record(p, capacity, per_job)), flush=True)

    started = time.monotonic()
    probes, stopped = search(prober, settings, cost_s=prober.cost_s, log=log)
    report = build_report(config, prober, settings, probes, capacity)
    report["elapsed_s"] = time.monotonic() - started
    for cls, why in stopped.items():
        report["classes"][cls]["stopped"] = why
    where = request.out or default_out_dir(config)
    out = write_outputs(report, fresh_run_dir(where.parent, where.name))  # never overwrites
    if not quiet:
        print(format_table(report))
        print(f"results: {out}")
        print(json.dumps(last_line(report, out)))
    return report, out


def probe_record(p: Probe, capacity: float, per_job: float) -> dict[str, Any]:
    """A probe as JSON, with its rate also in samples/s and as a load."""
    return {**asdict(p), "rate_samples_per_s": p.rate * per_job, "load": p.rate / capacity}


def build_report(
    config: ExperimentConfig,
    prober: Prober,
    s: SearchSettings,
    probes: Sequence[Probe],
    capacity: float,
) -> dict[str, Any]:
    """capacity.json: the settings, each class's answer (and the twin's), every probe."""
    per_job = mean_samples_per_job(config)
    classes = {cls: class_answer(probes, cls, s, per_job, capacity) for cls in JOB_CLASSES}
    for cls in JOB_CLASSES if prober.url else ():
        classes[cls]["twin"] = class_answer(probes, cls, s, per_job, capacity, twin=True)
    return {
        "name": config.name,
        "config": config.source,
        "mode": config.mode,
        "url": prober.url,
        "search": asdict(s),
        "seeds": list(prober.seeds),
        "unbatched_capacity_jobs_per_s": capacity,
        "mean_samples_per_job": per_job,
        "classes": classes,
        "probes": [probe_record(p, capacity, per_job) for p in probes],
    }


def default_out_dir(config: ExperimentConfig, root: str | Path = "results") -> Path:
    """results/capacity-<name>-<YYYYmmdd-HHMMSS>."""
    return Path(root) / f"capacity-{config.name}-{datetime.now():%Y%m%d-%H%M%S}"
