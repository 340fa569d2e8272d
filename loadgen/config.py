"""The experiment config: one frozen, validated model loaded from YAML.

`ExperimentConfig` is the serving config (serving/config.py: models, lanes,
scheduler, predictor, slo_ms, seed …) plus what only an experiment has: traffic,
service times and live settings. Left out, `models` is what the traffic asks for
(every workload of workload_mix on every backend of backends, at precision), and
the scheduler is the core's default, the same on every machine.

Every problem is reported at once, one line each, as `file: dotted.key: what is
wrong`, e.g. `configs/x.yaml: scheduler.lanes: Input should be greater than or
equal to 1`. An unknown key is an error listing the allowed ones, never a
silent default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from backends.base import PRECISIONS
from backends.registry import backend_names
from loadgen.cluster_config import ClusterConfig
from scheduling.config_errors import ConfigError, KeyedError, parse_yaml, validate
from scheduling.tokens import token_cost
from serving.config import BackendName, PrecisionName, ServingConfig
from workloads.registry import get_workload, workload_names

#: In `service_time.fixed`, the entry used for any workload not listed.
ANY_WORKLOAD = "*"
#: The traffic of a config that names none: ResNet-18 on ONNX Runtime.
DEFAULT_MIX: dict[str, float] = {"resnet18": 1.0}
DEFAULT_BACKENDS: dict[str, float] = {"onnx": 1.0}

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _known_workload(name: str) -> str:
    known = workload_names()
    if name not in known:
        raise ValueError(f"unknown workload {name!r}; choose from: {', '.join(known)}")
    return name


def _run_name(name: str) -> str:
    # The name becomes a directory name: keep it portable and unambiguous.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(
            f"{name!r} must start with a letter or digit and use only letters, digits, "
            "'_', '.' and '-' (at most 64 characters)"
        )
    return name


#: Keys of `live:` that moved into the serving config: old → new.
_MOVED_FROM_LIVE: dict[str, str] = {
    "lane_kind": "lanes.kind",
    "threads_per_lane": "lanes.threads_per_lane",
}


def _fixed_key(name: str) -> str:
    return name if name == ANY_WORKLOAD else _known_workload(name)


WorkloadName = Annotated[str, AfterValidator(_known_workload)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _positive(weight: Any) -> bool:
    return isinstance(weight, int | float) and weight > 0


def _positive_total(weights: dict[str, float], key: str) -> None:
    if weights and sum(weights.values()) <= 0:
        raise KeyedError(key, f"weights must not all be 0, got {weights}")


class SizeDistribution(BaseModel):
    """Samples per job of one class: `choices` (+ optional `weights`) or a `min`..`max` range.

    The range is uniform over the integers min, min+1, …, max (both included).
    """

    model_config = _FROZEN

    choices: tuple[Annotated[int, Field(ge=1)], ...] | None = Field(
        None, description="Possible sample counts."
    )
    weights: tuple[Weight, ...] | None = Field(
        None, description="Relative weight of each choice (default: equal)."
    )
    min: int | None = Field(None, ge=1, description="Smallest sample count of a uniform range.")
    max: int | None = Field(None, ge=1, description="Largest sample count of a uniform range.")

    @model_validator(mode="after")
    def _one_form(self) -> SizeDistribution:
        ranged = self.min is not None or self.max is not None
        if (self.choices is None) == (not ranged):
            raise ValueError("give either choices (+ weights) or min and max, not both or neither")
        if ranged:
            if self.min is None or self.max is None:
                raise KeyedError(
                    "max" if self.max is None else "min", "a range needs both min and max"
                )
            if self.min > self.max:
                raise KeyedError("min", f"min={self.min} is greater than max={self.max}")
            if self.weights is not None:
                raise KeyedError("weights", "weights go with choices, not with a min/max range")
            return self
        assert self.choices is not None
        if not self.choices:
            raise KeyedError("choices", "needs at least one value")
        if self.weights is not None:
            if len(self.weights) != len(self.choices):
                raise KeyedError(
                    "weights",
                    f"{len(self.weights)} weights for {len(self.choices)} choices",
                )
            if sum(self.weights) <= 0:
                raise KeyedError("weights", "weights must not all be 0")
        return self

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """(sample counts, probabilities) of the distribution."""
        if self.choices is None:
            assert self.min is not None and self.max is not None
            values = np.arange(self.min, self.max + 1, dtype=np.int64)
            return values, np.full(len(values), 1.0 / len(values))
        values = np.array(self.choices, dtype=np.int64)
        weights = np.array(self.weights or [1.0] * len(values), dtype=float)
        return values, weights / weights.sum()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` sample counts drawn from the distribution."""
        if self.choices is None:
            assert self.min is not None and self.max is not None
            return rng.integers(self.min, self.max, size=n, endpoint=True)
        values, probs = self.support()
        return rng.choice(values, size=n, p=probs)


class BatchSizes(BaseModel):
    """Samples per job, by class."""

    model_config = _FROZEN

    interactive: SizeDistribution = Field(
        default_factory=lambda: SizeDistribution(choices=(1,)),
        description="Interactive requests: a single image by default.",
    )
    batch: SizeDistribution = Field(
        default_factory=lambda: SizeDistribution(min=16, max=32),
        description="Batch requests: 16..32 images by default.",
    )


class FixedEntry(BaseModel):
    """Service time of one workload: base_ms + per_sample_ms × samples."""

    model_config = _FROZEN

    base_ms: float = Field(ge=0, allow_inf_nan=False, description="Fixed cost of a dispatch.")
    per_sample_ms: float = Field(ge=0, allow_inf_nan=False, description="Cost of each sample.")


class ServiceTimeConfig(BaseModel):
    """Where the simulator's service times come from: a profile, a fixed table or the predictor."""

    model_config = _FROZEN

    profile: str | None = Field(
        None,
        description="Profiler CSV (`mlws profile`); relative paths are tried against the "
        "working directory, then the config file's directory.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Which thread count of the profile (needed if it has several); with "
        "predictor, the thread count the predictor is asked at (default 1).",
    )
    stat: Literal["mean_ms", "p50_ms"] = Field(
        "mean_ms", description="Which latency statistic of the profile a dispatch takes."
    )
    fixed: dict[Annotated[str, AfterValidator(_fixed_key)], FixedEntry] | None = Field(
        None, description=f"Per-workload linear costs; key {ANY_WORKLOAD!r} covers the rest."
    )
    predictor: bool = Field(
        False,
        description="Time the lanes by the learned predictor (section predictor:, which must "
        "give path or train_from) at its mean: workloads and batch sizes no profile holds.",
    )
    cores: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] | None = Field(
        None,
        description="CPUs the simulated lanes share, by their lane group's threads and "
        "priority (low lanes yield to normal ones, as the gateway runs them); 'auto': this "
        "machine's. None: every lane has cores of its own.",
    )
    request_cpu_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description="With cores: CPU each request costs the gateway's event loop (reading, "
        "admitting, answering), at normal priority: under a flood of requests it slows "
        "the lanes as it does live (about 1.4 ms on a 2-core box).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ServiceTimeConfig:
        if sum((self.profile is not None, self.fixed is not None, self.predictor)) != 1:
            raise ValueError(
                "give exactly one of profile (a CSV path), fixed (a table) or "
                "predictor: true (the learned predictor)"
            )
        # By value, not by presence: a resolved copy (run dir's config.yaml) spells out
        # the defaults, and must load again.
        if self.fixed is not None and self.threads is not None:
            raise KeyedError("threads", "applies to a profile, not to a fixed table")
        if self.fixed is not None and self.stat != "mean_ms":
            raise KeyedError("stat", "applies to a profile, not to a fixed table")
        if self.predictor and self.stat != "mean_ms":
            raise KeyedError(
                "stat", "applies to a profile, not to the predictor (lanes take its mean)"
            )
        return self


class LiveConfig(BaseModel):
    """How `mode: live` reaches a real gateway."""

    model_config = _FROZEN

    url: str | None = Field(
        None,
        description="Base URL of a running gateway to load; None starts one (`mlws serve`) "
        "with this experiment's serving part: models, lanes, scheduler, SLOs.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="A request unanswered this long counts as an error."
    )
    ready_timeout_s: float = Field(
        600.0, gt=0, description="How long a started gateway may take to export and load."
    )
    twin: bool = Field(
        True,
        description="Also simulate the same arrivals and report sim-vs-live P50/P99 per class.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        # A started gateway's workers are the serving config's lanes now.
        if isinstance(data, dict):
            for old, new in _MOVED_FROM_LIVE.items():
                if old in data:
                    raise KeyedError(old, f"moved to {new} (the lanes of a started gateway)")
        return data


class ExperimentConfig(ServingConfig):
    """One experiment: traffic, service times and the serving config under test."""

    name: Annotated[str, AfterValidator(_run_name)] = Field(
        description="Run name; the run directory is <name>-<timestamp>-<seed>."
    )
    mode: Literal["simulate", "live"] = Field(
        "simulate", description="simulate: virtual clock; live: the real gateway over HTTP."
    )
    duration_s: float = Field(
        gt=0, le=1e7, allow_inf_nan=False, description="Span of arrivals, seconds."
    )
    arrival_rate: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Poisson arrival rate, jobs/s."
    )
    load: float | None = Field(
        None,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="Arrival rate as a fraction of capacity (see loadgen.arrivals).",
    )
    interactive_ratio: float = Field(
        0.3, ge=0, le=1, description="Probability that an arrival is interactive."
    )
    batch_sizes: BatchSizes = Field(default_factory=BatchSizes, description="Samples per job.")
    workload_mix: dict[WorkloadName, Weight] = Field(
        default_factory=lambda: dict(DEFAULT_MIX),
        min_length=1,
        description="Relative weight of each workload.",
    )
    backends: dict[BackendName, Weight] = Field(
        default_factory=lambda: dict(DEFAULT_BACKENDS),
        min_length=1,
        description="Relative weight of each backend.",
    )
    precision: PrecisionName = Field("fp32", description="Precision of every job.")
    service_time: ServiceTimeConfig = Field(description="Source of simulated service times.")
    jitter: float = Field(
        0.0,
        ge=0,
        le=3,
        allow_inf_nan=False,
        description="Lognormal sigma of each dispatch's service time (mean kept at 1).",
    )
    live: LiveConfig = Field(default_factory=LiveConfig, description="Live mode settings.")
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="Simulated nodes × lanes and the network hop (loadgen/cluster_config.py).",
    )

    #: The YAML file the config came from, to resolve relative paths and name errors.
    _source: Path | None = PrivateAttr(None)

    @classmethod
    def _fill_models(cls, data: dict[str, Any]) -> dict[str, Any]:
        # What the traffic asks for, left out: every workload of the mix on every backend,
        # at the one precision. Unknown names are left to their own keys' errors.
        if "models" in data:
            return data
        mix = data.get("workload_mix", DEFAULT_MIX)
        weights = data.get("backends", DEFAULT_BACKENDS)
        if not isinstance(mix, dict) or not isinstance(weights, dict):
            return data
        known = backend_names()
        backends = [b for b, w in weights.items() if b in known and _positive(w)]
        known = workload_names()
        names = [n for n, w in mix.items() if n in known and _positive(w)]
        if not backends or not names:
            return data
        precision = data.get("precision", "fp32")
        if precision not in PRECISIONS:
            return data
        models = [{"name": n, "backends": backends, "precisions": [precision]} for n in names]
        return {**data, "models": models}

    @model_validator(mode="after")
    def _models_serve_the_mix(self) -> ExperimentConfig:
        for w in self.active_workloads():
            model = self.model(w)
            if model is None:
                served = ", ".join(m.name for m in self.models)
                raise KeyedError("workload_mix", f"{w} is not in models (they serve {served})")
            lacking = [b for b in self.active_backends() if b not in model.backends]
            if lacking:
                raise KeyedError("backends", f"model {w} is not served on {', '.join(lacking)}")
            if self.precision not in model.precisions:
                raise KeyedError("precision", f"model {w} is not served at {self.precision}")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        if (self.arrival_rate is None) == (self.load is None):
            raise KeyedError(
                "load", "set exactly one of arrival_rate (jobs/s) or load (fraction of capacity)"
            )
        _positive_total(self.workload_mix, "workload_mix")
        _positive_total(self.backends, "backends")
        if self.service_time.predictor and not self.predictor.used:
            raise KeyedError(
                "service_time.predictor",
                "needs a predictor: predictor.path or predictor.train_from",
            )
        fixed = self.service_time.fixed
        if fixed is not None and ANY_WORKLOAD not in fixed:
            lacking = [w for w in self.active_workloads() if w not in fixed]
            if lacking:
                raise KeyedError(
                    "service_time.fixed", f"no entry for {', '.join(lacking)} (in workload_mix)"
                )
        capacity = self.scheduler.tokens.capacity
        # Measured costs (tokens.profile) are checked once the file is read (experiment.py).
        for w in self.active_workloads() if self.scheduler.tokens.profile is None else ():
            need = token_cost(get_workload(w).spec.token_base, 1, self.precision)
            if need > capacity:
                raise KeyedError(
                    "scheduler.tokens.capacity",
                    f"{capacity} tokens cannot hold even a one-sample {w} dispatch ({need})",
                )
        return self

    # --------------------------------------------------------------- helpers
    def active_workloads(self) -> list[str]:
        """Workloads with a positive weight, in config order."""
        return [w for w, weight in self.workload_mix.items() if weight > 0]

    def active_backends(self) -> list[str]:
        """Backends with a positive weight, in config order."""
        return [b for b, weight in self.backends.items() if weight > 0]

    @property
    def source(self) -> str:
        """The config file's name for messages (`<config>` if built in code)."""
        return str(self._source) if self._source is not None else "<config>"

    def with_source(self, path: str | Path | None) -> ExperimentConfig:
        """This config, remembering the file it came from (copies carry it along)."""
        self._source = Path(path) if path is not None else None
        return self

    def cores(self) -> int | None:
        """CPUs the simulated lanes share (service_time.cores, 'auto' resolved), or None."""
        cores = self.service_time.cores
        if cores == "auto":
            return os.cpu_count() or 1
        return cores

    def resolve_path(self, path: str) -> Path:
        """A config path: absolute, or the first existing of cwd/path and config-dir/path."""
        p = Path(path).expanduser()
        if p.is_absolute():
            return p
        candidates = [Path.cwd() / p]
        if self._source is not None:
            candidates.append(self._source.parent / p)
        return next((c for c in candidates if c.exists()), p)

    def check_files(self) -> None:
        """Raise ConfigError if a referenced file (profile, predictor) is missing."""
        problems = []
        profile = self.service_time.profile
        if profile is not None and not self.resolve_path(profile).is_file():
            problems.append(f"service_time.profile: file not found: {profile}")
        predictor = self.predictor
        if predictor.path and not self.resolve_path(predictor.path).is_file():
            problems.append(
                f"predictor.path: file not found: {self.predictor.path}; train the "
                "predictor first (`mlws predictor train`) or leave predictor.path out"
            )
        train_from = predictor.train_from
        if train_from and not self.resolve_path(train_from).is_file():
            problems.append(f"predictor.train_from: file not found: {train_from}")
        tokens = self.scheduler.tokens.profile
        if tokens and not self.resolve_path(tokens).is_file():
            problems.append(f"scheduler.tokens.profile: file not found: {tokens}")
        if problems:
            raise ConfigError("\n".join(f"{self.source}: {p}" for p in problems))


# ------------------------------------------------------------------- loading
def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read, validate and file-check a YAML experiment config.

    Raises ConfigError with one `file: key: problem` line per problem.
    """
    data = _read_yaml(path)
    config = parse_experiment_config(data, source=str(path))
    config.check_files()
    return config


def parse_experiment_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate an already-parsed mapping; errors are reported against `source`."""
    config: ExperimentConfig = validate(ExperimentConfig, data, source)
    return config.with_source(source)


def _read_yaml(path: str | Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the config is empty")
    return data
