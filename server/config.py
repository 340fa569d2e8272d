"""The gateway's configuration: one frozen, validated model, loadable from YAML.

Every problem is reported at once, one line each, as `file: dotted.key: what is
wrong` (e.g. `gw.yaml: lanes.kind: Input should be 'thread' or 'process'`). An
unknown key is an error listing the allowed ones, never a silent default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scheduling.config import LaneGroupConfig, SchedulerConfig
from scheduling.config_errors import ConfigError, KeyedError, parse_yaml, validate
from scheduling.job import DEFAULT_SLO_S, JobClass
from server.auth_config import AuthConfig
from server.limits import LimitsConfig
from workloads.specs import RESNET18, RESNET50, TINY, VIT_B_16

_FROZEN = ConfigDict(extra="forbid", frozen=True)
#: Built-in workloads a model entry may name without an `onnx_file`.
BUILTIN_MODELS: tuple[str, ...] = (RESNET18.name, RESNET50.name, VIT_B_16.name, TINY.name)
#: Per-class queue bounds the gateway applies unless the config sets its own.
DEFAULT_QUEUE_LIMIT: dict[str, int] = {"interactive": 64, "batch": 256}
#: Service-time budget of one dispatch on lanes shared by every class: half the
#: interactive SLO, so an interactive job waits at most one such dispatch and still
#: has half its budget to run.
DEFAULT_MAX_DISPATCH_MS = 50.0
#: Budget of a dispatch on low-priority batch lanes: interactive work never waits for
#: them (it preempts them), so this only bounds how long a batch job waits for another
#: batch job's dispatch (a quarter of the batch SLO), and lets a batch job fan out.
DEFAULT_BATCH_DISPATCH_MS = 250.0
BackendName = Literal["onnx", "pytorch"]
PrecisionName = Literal["fp32", "fp16"]


#: A gateway config is unreadable or invalid; one line per problem.
GatewayConfigError = ConfigError


class ModelConfig(BaseModel):
    """One model the gateway loads on every lane, on each backend × precision listed."""

    model_config = _FROZEN

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Workload name: a built-in (resnet18, resnet50, vit_b_16, tiny) or, "
        "with onnx_file, the name a user's ONNX model is registered under.",
    )
    backends: tuple[BackendName, ...] = Field(
        ("onnx",), min_length=1, description="Backends to load; the first is the default."
    )
    precisions: tuple[PrecisionName, ...] = Field(
        ("fp32",), min_length=1, description="Precisions to load; the first is the default."
    )
    weights: str | None = Field(
        None, description="A torchvision-compatible state_dict file; None: seeded random."
    )
    onnx_file: str | None = Field(
        None, description="A user's .onnx file served under `name` (backend onnx only)."
    )
    flops_per_sample: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="onnx_file only: FLOPs of one sample (2 × multiply-accumulates), which "
        "a trained predictor (predictor.path) times the model by. None: estimated from "
        "the graph's Conv/Gemm/MatMul nodes.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        for key in ("backends", "precisions"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise KeyedError(key, f"lists a value twice: {list(values)}")
        if self.onnx_file is None and self.name not in BUILTIN_MODELS:
            raise KeyedError(
                "name",
                f"unknown model {self.name!r}; choose from {', '.join(BUILTIN_MODELS)} "
                "or give onnx_file",
            )
        if self.onnx_file is not None:
            if self.name in BUILTIN_MODELS:
                raise KeyedError("name", f"{self.name!r} is a built-in; pick another for onnx_file")
            if self.backends != ("onnx",):
                raise KeyedError(
                    "backends", f"onnx_file runs only on [onnx], got {list(self.backends)}"
                )
            if self.weights is not None:
                raise KeyedError("weights", "weights and onnx_file exclude each other")
        elif self.flops_per_sample is not None:
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


def default_lane_groups(cores: int) -> list[dict[str, Any]]:
    """The default layout for a machine with `cores` CPUs: priority lanes.

    Interactive lanes at normal OS priority: at least two, so that a request
    arriving while another runs starts at once instead of waiting behind it, each
    with twice its share of the cores (2 cores: two lanes of 2 threads), since
    they are rarely all busy together and a lone request then runs on more
    threads. One single-thread batch lane per core at low priority (SCHED_IDLE),
    each a worker process. Batch work fills every core the interactive lanes
    leave idle and yields it the moment an interactive request (or the event loop
    answering one) needs it: on CPU this is what preemption looks like, so an
    interactive job never waits behind a batch dispatch.

    Measured on 2 cores at 0.7 load (ResNet-18, 70 % interactive batch-1, 30 %
    batch-16): one interactive lane of 2 threads met the 100 ms SLO for 98.1 %
    of interactive requests, two such lanes for 99.2-99.6 %.
    """
    interactive = max(2, cores // 4)
    return [
        {
            "name": "interactive",
            "count": interactive,
            "classes": ["interactive"],
            "threads": min(cores, 2 * max(1, cores // interactive)),
            "priority": "normal",
            "max_dispatch_ms": DEFAULT_MAX_DISPATCH_MS,
        },
        {
            "name": "batch",
            "count": max(1, cores),
            "classes": ["batch"],
            "threads": 1,
            "priority": "low",
            # Processes, not threads: a low-priority thread preempted while holding the
            # interpreter lock stalls the event loop and interactive lanes (measured:
            # 9 of 103 interactive requests refused on thread lanes, 3 on processes).
            "kind": "process",
            "max_dispatch_ms": DEFAULT_BATCH_DISPATCH_MS,
        },
    ]


class LaneConfig(BaseModel):
    """The workers that run dispatches: how many, of which kind, with how many threads."""

    model_config = _FROZEN

    count: int = Field(
        2,
        ge=1,
        le=1024,
        description="Number of lanes. Given without scheduler.lane_groups: that many lanes "
        "share every class (threads_per_lane each). Left out: the default priority layout "
        "(see scheduler.lane_groups), whose total it then is.",
    )
    kind: Literal["thread", "process"] = Field(
        "thread",
        description="thread: a single-thread executor per lane in the server process; "
        "process: a spawned worker process per lane, tensors via shared memory.",
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

    def threads(self, group: LaneGroupConfig) -> int:
        """Intra-op threads each lane of `group` runs with."""
        if group.threads is not None:
            return group.threads
        if self.threads_per_lane is not None:
            return self.threads_per_lane
        return max(1, (os.cpu_count() or 1) // group.count)


class PredictorConfig(BaseModel):
    """Where the scheduler's service-time predictions come from, and how they are corrected."""

    model_config = _FROZEN

    path: str | None = Field(
        None,
        description="A model file from `mlws predictor train` (numbers only: "
        "loading it runs no code). None: service times are learned online from calibration runs "
        "and every dispatch, starting from nothing.",
    )
    quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Plan with this quantile of the trained predictor (e.g. 0.95, for SLO "
        "safety) instead of its mean; the quantile must have been trained. Needs path.",
    )
    correction_half_life: float = Field(
        20.0,
        gt=0,
        allow_inf_nan=False,
        description="Online correction: dispatches of one (model, backend, precision, "
        "batch-size bucket) after which an observed residual's weight halves.",
    )

    @model_validator(mode="after")
    def _quantile_needs_a_file(self) -> PredictorConfig:
        if self.quantile is not None and self.path is None:
            raise KeyedError("quantile", "needs predictor.path: only a trained predictor has one")
        return self


def _default_models() -> tuple[ModelConfig, ...]:
    return (ModelConfig(name=RESNET18.name),)


def _default_scheduler() -> SchedulerConfig:
    groups = default_lane_groups(os.cpu_count() or 1)
    return SchedulerConfig.model_validate(
        {"queue_limit": dict(DEFAULT_QUEUE_LIMIT), "lane_groups": groups}
    )


class GatewayConfig(BaseModel):
    """Everything `mlws serve` needs; the embedded default serves ResNet-18 on ONNX fp32."""

    model_config = _FROZEN

    host: str = Field("127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    models: tuple[ModelConfig, ...] = Field(
        default_factory=_default_models, description="Models to serve (at least one)."
    )
    lanes: LaneConfig = Field(default_factory=LaneConfig, description="Worker lanes.")
    scheduler: SchedulerConfig = Field(
        default_factory=_default_scheduler,
        description="The scheduling core. Lanes: scheduler.lane_groups if given; else, with "
        "lanes.count, that many lanes shared by every class (max_dispatch_ms 50); else the "
        "default priority layout (interactive lanes at normal priority, one low-priority "
        "batch lane per core). queue_limit defaults to interactive 64, batch 256 (service "
        "times are learned from calibration runs and every dispatch).",
    )
    predictor: PredictorConfig = Field(
        default_factory=PredictorConfig,
        description="Service-time predictor and its online correction.",
    )
    max_body_mb: float = Field(
        32.0,
        gt=0,
        le=4096,
        description="Largest request body in MiB (32: a 32×3×224×224 float32 batch in "
        "base64 JSON); larger bodies get 413.",
    )
    max_request_samples: int = Field(64, ge=1, description="Most samples in one request.")
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="Connections, header and body sizes, read times (server/limits.py).",
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, le=3600, description="On SIGTERM, how long queued work may drain."
    )
    stats_window_s: float = Field(60.0, gt=0, description="Span of /stats percentiles.")
    onnx_dir: str = Field("models/onnx", description="Cache of exported ONNX files.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device of every runner.")
    seed: int = Field(0, ge=0, description="Seed of random weights and synthesized inputs.")
    default_slo_ms: dict[JobClass, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: {c: s * 1000 for c, s in DEFAULT_SLO_S.items()},
        description="SLO per class when a request gives no slo_ms.",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After of a 429 or 503 answer.")
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Bearer-token access control (server/auth.py); no tokens: none.",
    )

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        # A validator rather than min_length: min_length also fires when an item is bad.
        if not value:
            raise ValueError("list at least one model")
        return value

    @model_validator(mode="before")
    @classmethod
    def _scheduler_follows_lanes(cls, data: Any) -> Any:
        # The lane layout is one thing described in two places: fill the scheduler's
        # side from lanes.count (shared lanes) or the default priority layout, and
        # lanes.count from the lane groups; give the queue its gateway bounds.
        if not isinstance(data, dict) or not isinstance(data.get("scheduler", {}), dict):
            return data
        lanes = data.get("lanes", {})
        lanes = dict(lanes) if isinstance(lanes, dict) else lanes
        scheduler = dict(data.get("scheduler") or {})
        groups = scheduler.get("lane_groups")
        shared = not isinstance(lanes, dict) or "count" in lanes or "lanes" in scheduler
        if groups is None and shared:
            count = lanes.get("count", 2) if isinstance(lanes, dict) else lanes.count
            scheduler.setdefault("lanes", count)
            scheduler.setdefault("max_dispatch_ms", DEFAULT_MAX_DISPATCH_MS)
        else:
            if groups is None:
                groups = scheduler["lane_groups"] = default_lane_groups(os.cpu_count() or 1)
            counts = [g.get("count") if isinstance(g, dict) else None for g in groups or ()]
            if isinstance(lanes, dict) and all(isinstance(c, int) for c in counts):
                lanes.setdefault("count", sum(counts))  # type: ignore[arg-type]
        scheduler.setdefault("queue_limit", dict(DEFAULT_QUEUE_LIMIT))
        return {**data, "lanes": lanes, "scheduler": scheduler}

    @model_validator(mode="after")
    def _cross_checks(self) -> GatewayConfig:
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

    @property
    def max_body_bytes(self) -> int:
        """max_body_mb in bytes."""
        return int(self.max_body_mb * (1 << 20))


# ------------------------------------------------------------------- loading
def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML gateway config.

    Raises GatewayConfigError with one `file: dotted.key: problem` line per problem.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GatewayConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
    return parse_gateway_config({} if data is None else data, source=str(path))


def parse_gateway_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed mapping; errors are reported against `source`."""
    config: GatewayConfig = validate(GatewayConfig, data, source)
    return config
