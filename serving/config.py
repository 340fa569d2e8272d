"""The serving config: what the gateway and an experiment both serve, as one class tree.

`ServingConfig` holds the models, lanes, scheduler, predictor, SLOs per class,
device, seed, ONNX cache and plugins. `GatewayConfig` (server/config.py) adds
HTTP, limits and access control; `ExperimentConfig` (loadgen/config.py) adds
traffic, service times and live settings. Both inherit these keys at their top
level, so a YAML file spells them the same in either, and a live experiment
hands its serving part to the gateway it starts as it is.

Names come from their registries: a model from workloads/registry.py, a
backend from backends/registry.py (after the config's plugins are imported, so
a plugin's backend may be named), a policy from scheduling/policies. An unknown
name is an error listing the registry's names. A key renamed when the two trees
became one is an error naming the new key, never a silent alias.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from backends.base import DEVICES, PRECISIONS
from backends.registry import backend_names, onnx_file_backends
from scheduling.config import LaneGroupConfig, SchedulerConfig
from scheduling.config_errors import KeyedError
from scheduling.job import DEFAULT_SLO_S, JobClass
from serving.plugins import MODULE_NAME, PluginError, import_plugins
from serving.ray_config import RayLanesConfig
from workloads.registry import workload_names

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _choice(kind: str, choices: list[str] | tuple[str, ...], value: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose from: {', '.join(choices)}")
    return value


def _known_backend(name: str) -> str:
    return _choice("backend", backend_names(), name)


def _known_precision(name: str) -> str:
    return _choice("precision", PRECISIONS, name)


def _known_device(name: str) -> str:
    return _choice("device", DEVICES, name)


BackendName = Annotated[str, AfterValidator(_known_backend)]
PrecisionName = Annotated[str, AfterValidator(_known_precision)]


def _distinct(key: str, values: tuple[str, ...]) -> None:
    if len(set(values)) != len(values):
        raise KeyedError(key, f"lists a value twice: {list(values)}")


class ModelConfig(BaseModel):
    """One served model, loaded on every lane on each backend × precision listed."""

    model_config = _FROZEN

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Workload name: one of workloads/registry.py's (resnet18, resnet50, "
        "vit_b_16, tiny) or, with onnx_file, the name a user's ONNX model is served under.",
    )
    backends: tuple[BackendName, ...] = Field(
        ("onnx",),
        description="Backends to load (backends/registry.py's names, plugins' included); "
        "the first is the default.",
    )
    precisions: tuple[PrecisionName, ...] = Field(
        ("fp32",), description="Precisions to load; the first is the default."
    )
    weights: str | None = Field(
        None, description="A torchvision-compatible state_dict file; None: seeded random."
    )
    onnx_file: str | None = Field(
        None,
        description="A user's .onnx file served under `name` (on backends that run ONNX "
        "files: onnx).",
    )
    flops_per_sample: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="onnx_file only: FLOPs of one sample (2 × multiply-accumulates), which "
        "a trained predictor (predictor.path) times the model by. None: estimated from "
        "the graph's Conv/Gemm/MatMul nodes.",
    )

    @field_validator("backends", "precisions")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Not min_length: that would also fire when an item is bad, a second line.
        if not value:
            raise ValueError("list at least one")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        _distinct("backends", self.backends)
        _distinct("precisions", self.precisions)
        known = workload_names()
        if self.onnx_file is None:
            if self.name not in known:
                raise KeyedError(
                    "name",
                    f"unknown model {self.name!r}; choose from {', '.join(known)} "
                    "or give onnx_file",
                )
            return self
        if self.name in known:
            raise KeyedError("name", f"{self.name!r} is a built-in; pick another for onnx_file")
        runs_files = onnx_file_backends()
        if any(b not in runs_files for b in self.backends):
            raise KeyedError(
                "backends",
                f"onnx_file runs only on [{', '.join(runs_files)}], got {list(self.backends)}",
            )
        if self.weights is not None:
            raise KeyedError("weights", "weights and onnx_file exclude each other")
        return self

    @model_validator(mode="after")
    def _flops_need_a_file(self) -> ModelConfig:
        if self.onnx_file is None and self.flops_per_sample is not None:
            raise KeyedError(
                "flops_per_sample", "applies to onnx_file models only (built-ins know theirs)"
            )
        return self

    @property
    def default_backend(self) -> str:
        """Backend used when a request names none."""
        return self.backends[0]

    @property
    def default_precision(self) -> str:
        """Precision used when a request names none."""
        return self.precisions[0]


class LaneConfig(BaseModel):
    """The workers that run dispatches: how many, of which kind, with how many threads."""

    model_config = _FROZEN

    count: int = Field(
        2,
        ge=1,
        le=1024,
        description="Number of lanes. Given without scheduler.lane_groups: that many lanes "
        "share every class (threads_per_lane each). Left out: scheduler.lanes, or the lane "
        "groups' total.",
    )
    kind: Literal["thread", "process", "ray"] = Field(
        "thread",
        description="thread: a single-thread executor per lane in the server process; "
        "process: a spawned worker process per lane, tensors via shared memory; ray: a Ray "
        "actor per lane on a node of a Ray cluster (lanes.ray), tensors via its object "
        "store. A lane group's own kind wins.",
    )
    threads_per_lane: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Intra-op threads per lane of a group that sets none; None: cores ÷ the "
        "group's lane count, ≥ 1.",
    )
    start_timeout_s: float = Field(
        300.0, gt=0, description="Longest a worker may take to load and warm its models."
    )
    watchdog_min_s: float | None = Field(
        30.0,
        gt=0,
        description="A dispatch still running after max(watchdog_min_s, watchdog_factor × "
        "its predicted service time) is cut off: its requests get 503 and the lane is "
        "replaced (worker killed, or a fresh thread with fresh runners). None: no watchdog.",
    )
    watchdog_factor: float = Field(
        20.0, ge=1, description="Multiple of the predicted service time the watchdog allows."
    )
    ray: RayLanesConfig = Field(
        default_factory=RayLanesConfig, description="The Ray cluster of ray lanes."
    )

    def threads(self, group: LaneGroupConfig) -> int:
        """Intra-op threads each lane of `group` runs with."""
        if group.threads is not None:
            return group.threads
        if self.threads_per_lane is not None:
            return self.threads_per_lane
        return max(1, (os.cpu_count() or 1) // group.count)


class PredictorConfig(BaseModel):
    """The learned service-time predictor: a trained file, or a profile to train one on.

    With neither, the gateway learns service times online from its calibration
    runs and every dispatch, and a simulation's scheduler believes the profile
    (or fixed table) that times its lanes.
    """

    model_config = _FROZEN

    path: str | None = Field(
        None,
        description="A model file from `mlws predictor train`, e.g. models/predictor.mlws "
        "(numbers only: loading it runs no code).",
    )
    train_from: str | None = Field(
        None,
        description="Instead of path (experiments): a profile CSV to train the predictor on "
        "at start (a second or two), so the config runs on a fresh clone.",
    )
    model_type: Literal["random_forest", "gradient_boosting"] = Field(
        "random_forest", description="Model trained from train_from."
    )
    quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Plan with this quantile of the predictor (e.g. 0.95, for SLO safety) "
        "instead of its mean; a trained file must have been trained for it.",
    )
    correction_half_life: float = Field(
        20.0,
        gt=0,
        allow_inf_nan=False,
        description="Gateway: online correction, in dispatches of one (model, backend, "
        "precision, batch-size bucket) after which an observed residual's weight halves.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_enabled_switch(cls, data: Any) -> Any:
        if isinstance(data, dict) and "enabled" in data:
            raise KeyedError(
                "enabled",
                "removed: a predictor is used when predictor.path or predictor.train_from "
                "is given; leave both out for none",
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> PredictorConfig:
        if self.path and self.train_from:
            raise KeyedError(
                "train_from", "give either path (a trained file) or train_from (a profile CSV)"
            )
        if self.path and self.model_type != "random_forest":
            raise KeyedError("model_type", "applies to train_from; a trained file has its own")
        if self.quantile is not None and not self.used:
            raise KeyedError(
                "quantile", "needs predictor.path or predictor.train_from: only a predictor has one"
            )
        return self

    @property
    def used(self) -> bool:
        """Whether a learned predictor is configured (path or train_from)."""
        return bool(self.path or self.train_from)


class SloMs(BaseModel):
    """Latency budget per class, milliseconds (deadline = arrival + SLO)."""

    model_config = _FROZEN

    interactive: float = Field(
        DEFAULT_SLO_S["interactive"] * 1000,
        gt=0,
        allow_inf_nan=False,
        description="Interactive SLO, milliseconds.",
    )
    batch: float = Field(
        DEFAULT_SLO_S["batch"] * 1000,
        gt=0,
        allow_inf_nan=False,
        description="Batch SLO, milliseconds.",
    )

    def __getitem__(self, job_class: JobClass) -> float:
        """The SLO of `job_class`, milliseconds."""
        value: float = getattr(self, job_class)
        return value


def _as_data(value: Any) -> Any:
    """A config object built in code as the keys it was given (a mapping stays as is)."""
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


def _valid_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _default_models() -> tuple[ModelConfig, ...]:
    return (ModelConfig(name="resnet18"),)


#: Keys renamed when the gateway's and the experiment's configs became one: old → new.
RENAMED: dict[str, str] = {"default_slo_ms": "slo_ms"}


class ServingConfig(BaseModel):
    """What is served and how it is scheduled; embedded by the gateway and experiment configs.

    Subclasses choose what a config that leaves the lanes out gets
    (`_default_layout`) and which scheduler keys they fill (`_scheduler_defaults`):
    the gateway a layout sized to this machine, an experiment the core's own
    defaults, so that a simulation does not depend on the machine it runs on.
    """

    model_config = _FROZEN

    plugins: tuple[Annotated[str, Field(pattern=MODULE_NAME)], ...] = Field(
        (),
        description="Modules imported before anything else is checked, e.g. one that calls "
        "backends.registry.register_backend (the gateway and every lane worker import "
        "them; they run code, like any module you install).",
    )
    models: tuple[ModelConfig, ...] = Field(
        default_factory=_default_models, description="Models to serve (at least one)."
    )
    lanes: LaneConfig = Field(default_factory=LaneConfig, description="Worker lanes.")
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig, description="The scheduling core."
    )
    predictor: PredictorConfig = Field(
        default_factory=PredictorConfig,
        description="Learned service-time predictor and the gateway's online correction.",
    )
    slo_ms: SloMs = Field(
        default_factory=SloMs,
        description="Latency budget per class (a gateway request may give its own slo_ms).",
    )
    device: Annotated[str, AfterValidator(_known_device)] = Field(
        "auto", description="Device of every runner: auto, cpu or cuda."
    )
    seed: int = Field(
        0, ge=0, description="Seeds random weights, synthesized inputs, arrivals and jitter."
    )
    onnx_dir: str = Field("models/onnx", description="Cache of exported ONNX files.")

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        # Renamed keys first (their message is the useful one), then the plugins, whose
        # registrations the names checked below may need.
        if not isinstance(data, dict):
            return data
        for old, new in RENAMED.items():
            if old in data:
                raise KeyedError(old, f"renamed to {new}")
        plugins = data.get("plugins")
        if isinstance(plugins, list | tuple) and all(isinstance(p, str) for p in plugins):
            try:
                import_plugins(plugins)
            except PluginError as exc:
                raise KeyedError("plugins", str(exc)) from None
        return cls._lanes_and_scheduler(cls._fill_models(data))

    @classmethod
    def _fill_models(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The models of a config that lists none (here: the field's default)."""
        return data

    @classmethod
    def _lanes_and_scheduler(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Fill each of lanes.count and the scheduler's lanes from the other.

        The lane layout is one thing said in two places: lanes.count (lanes shared
        by every class) or scheduler.lane_groups / scheduler.lanes. Whichever is
        given fills the other; a contradiction is reported after validation.
        """
        lanes, scheduler = _as_data(data.get("lanes", {})), _as_data(data.get("scheduler", {}))
        if not isinstance(lanes, dict) or not isinstance(scheduler, dict):
            return data  # bad types: reported by the fields' own validation
        lanes, scheduler = dict(lanes), dict(scheduler)
        layout_given = "count" in lanes or "lanes" in scheduler
        if scheduler.get("lane_groups") is None and not layout_given:
            scheduler = cls._default_layout(scheduler)
        # Only a valid count crosses over: a bad one is reported once, where it was written.
        groups = scheduler.get("lane_groups")
        if isinstance(groups, list | tuple):
            counts = [g.get("count") if isinstance(g, dict) else None for g in groups]
            if all(_valid_count(c) for c in counts):
                lanes.setdefault("count", sum(counts))  # type: ignore[arg-type]
        elif _valid_count(scheduler.get("lanes")):
            lanes.setdefault("count", scheduler["lanes"])
        elif _valid_count(lanes.get("count")) and "lanes" not in scheduler:
            scheduler["lanes"] = lanes["count"]
        scheduler = cls._scheduler_defaults(scheduler, shared=groups is None)
        return {**data, "lanes": lanes, "scheduler": scheduler}

    @classmethod
    def _default_layout(cls, scheduler: dict[str, Any]) -> dict[str, Any]:
        """The scheduler of a config that sets no lanes at all (here: the core's default)."""
        return scheduler

    @classmethod
    def _scheduler_defaults(cls, scheduler: dict[str, Any], shared: bool) -> dict[str, Any]:
        """Scheduler keys the embedding fills when left out; `shared`: no lane groups."""
        return scheduler

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        # A validator rather than min_length: min_length also fires when an item is bad.
        if not value:
            raise ValueError("list at least one model")
        return value

    @model_validator(mode="after")
    def _serving_checks(self) -> ServingConfig:
        if self.scheduler.lanes != self.lanes.count:
            where = (
                f"the lane groups hold {self.scheduler.lanes} lanes"
                if self.scheduler.lane_groups
                else f"scheduler.lanes={self.scheduler.lanes}"
            )
            raise KeyedError(
                "lanes.count",
                f"lanes.count={self.lanes.count} but {where}; set only lanes.count "
                "(lanes shared by every class) or only scheduler.lane_groups",
            )
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise KeyedError("models", f"lists a name twice: {names}")
        return self

    def model(self, name: str) -> ModelConfig | None:
        """The configured model called `name`, or None."""
        return next((m for m in self.models if m.name == name), None)

    def serving_data(self) -> dict[str, Any]:
        """The serving part as plain data (JSON types): what a started gateway is given."""
        return self.model_dump(mode="json", include=set(ServingConfig.model_fields))

    def serving(self) -> ServingConfig:
        """The serving part on its own, as a ServingConfig."""
        return ServingConfig.model_validate(self.serving_data())
