"""Validated configuration of the scheduling core.

One frozen pydantic model per concern, each field documented and bounded; an
unknown key or a contradictory combination is an error naming the values,
never a silent default.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scheduling.job import JOB_CLASSES, JobClass
from scheduling.policies import POLICIES
from scheduling.policies.weights import DynamicWeights

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class MicroBatchConfig(BaseModel):
    """How compatible queued jobs are merged into one dispatch."""

    model_config = _FROZEN

    enabled: bool = Field(
        True, description="Merge compatible jobs (same workload, backend, precision)."
    )
    window_ms: float = Field(
        10.0,
        ge=0,
        allow_inf_nan=False,
        description="How long a batchable job may wait for companions after its own "
        "enqueue, unless its micro-batch is already full. 0 merges only what is queued.",
    )
    max_batch: int = Field(128, ge=1, description="Most samples in one merged dispatch.")
    classes: tuple[JobClass, ...] = Field(
        ("batch",),
        description="Classes whose jobs may be merged and held for the window; jobs of "
        "other classes dispatch alone and as soon as a lane and tokens allow.",
    )

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: tuple[JobClass, ...]) -> tuple[JobClass, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"microbatch.classes lists a class twice: {value!r}")
        return value

    @model_validator(mode="after")
    def _enabled_needs_a_class(self) -> MicroBatchConfig:
        if self.enabled and not self.classes:
            raise ValueError(
                f"microbatch.enabled={self.enabled} but microbatch.classes={self.classes!r}: "
                "nothing could be merged; disable micro-batching or name a class"
            )
        return self


class TokenConfig(BaseModel):
    """The memory budget, in tokens of one MiB (see scheduling.tokens)."""

    model_config = _FROZEN

    capacity: int = Field(
        1000,
        ge=1,
        description="Tokens (MiB) all running dispatches on one node may hold: the memory "
        "a node gives its models (on a GPU, the device's memory minus a reserve for the "
        "CUDA context and the allocator's slack).",
    )
    profile: str | None = Field(
        None,
        description="A `mlws profile` CSV with memory columns (resident_mb, per_sample_mb): "
        "each model and precision it holds costs resident + per_sample × samples MiB (the "
        "largest figures over its backends and threads); others keep the hand-set table "
        "(base + 4 per sample, × 0.7 at fp16). Relative paths as the config's other files.",
    )
    device_reserve_mb: int | None = Field(
        None,
        ge=0,
        description="On a CUDA device: the capacity is the device's memory minus this "
        "reserve (MiB: the CUDA context, the allocator's slack), read at start-up, instead "
        "of `capacity`. A gateway on CPU keeps `capacity`.",
    )
    lane_budget: int | None = Field(
        None,
        ge=1,
        description="MiB of loaded models one lane may hold (each model's resident cost): "
        "when the served models do not all fit, a lane loads a model when a dispatch needs "
        "it and first evicts the models it used least recently. None: every lane holds "
        "every model, loaded at start-up.",
    )
    load_ms: dict[str, float] = Field(
        default_factory=dict,
        description="Per model, the time (ms) a lane takes to load and warm it, until the "
        "gateway has measured one: a cold start counted into admission's forecast.",
    )
    load_ms_per_mib: float = Field(
        20.0,
        ge=0,
        description="A model load_ms does not name is predicted to load in this many ms per "
        "MiB of its resident cost until one is measured (ResNet-18 on ONNX Runtime, one CPU "
        "thread: about 1.6 s for its 80 MiB).",
    )


class LaneGroupConfig(BaseModel):
    """Lanes that serve the same classes and run the same way.

    The core only reads `name`, `count`, `classes` and `max_dispatch_ms`;
    `threads` and `priority` say how the executor runs the group's lanes (the
    gateway's workers, the simulator's CPU model).
    """

    model_config = _FROZEN

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Group name (metrics, /v1/lanes)."
    )
    count: int = Field(ge=1, le=1024, description="Lanes in the group.")
    classes: tuple[JobClass, ...] = Field(
        JOB_CLASSES,
        min_length=1,
        description="Job classes the group runs; every class is run by exactly one group.",
    )
    max_dispatch_ms: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Service-time budget of one dispatch on this group's lanes (see "
        "SchedulerConfig.max_dispatch_ms). None: only the sample caps apply.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Intra-op threads per lane (executor); None: the executor's default.",
    )
    priority: Literal["normal", "low"] = Field(
        "normal",
        description="OS scheduling priority of the group's workers (executor): low lanes "
        "(SCHED_IDLE on Linux) use every core the normal ones leave idle and yield it at "
        "once when a normal lane, or the gateway's event loop, needs it.",
    )
    kind: Literal["thread", "process", "ray"] | None = Field(
        None,
        description="Worker kind of the group's lanes (executor: thread, process or ray); "
        "None: the gateway's lanes.kind. Low-priority lanes belong in processes (or Ray "
        "actors): a low thread preempted while it holds the interpreter lock would stall the "
        "event loop (priority inversion).",
    )

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: tuple[JobClass, ...]) -> tuple[JobClass, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"classes lists a class twice: {value!r}")
        return value


class ClassAdmission(BaseModel):
    """What the core does with a job of one class that is predicted to miss its deadline."""

    model_config = _FROZEN

    refuse_late: bool = Field(
        False,
        description="At submit, refuse (PredictedLate: HTTP 429 with Retry-After) a job whose "
        "predicted finish — the work ahead of it under the policy, the lanes' remaining "
        "busy time and its own service time, at the planning estimate — plus margin_ms is "
        "past its deadline. Needs a service model; without one every job is admitted.",
    )
    shed_late: bool = Field(
        False,
        description="Drop (outcome 'shed', HTTP 503) a queued job that can no longer meet its "
        "deadline even if started now, and never start a dispatch whose predicted end is "
        "past the deadline of every job in it. False: the class accepts late work.",
    )
    margin_ms: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="Time admission keeps in hand for what the core does not see "
        "(reading and answering the request, timer jitter).",
    )
    quantile: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        allow_inf_nan=False,
        description="How sure admission must be under load: the quantile of the forecast "
        "finish that has to meet the deadline. The service models' planning estimate is "
        "their 0.95 quantile; another level scales its excess over the mean (a normal "
        "approximation).",
    )
    loaded: float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="Offered load of the class's lanes (recent arrivals × mean service ÷ "
        "lanes) from which `quantile` applies. Below it a job is refused only if its mean "
        "forecast misses: refusing pays only when another job takes the slot, and under "
        "light load a refusal is a certain miss where admitting risks a rare late one. "
        "0: always plan at `quantile`.",
    )

    probe_s: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Idle lanes of the class that have finished nothing for this long "
        "admit the next job whatever its forecast: the service model learns only from "
        "runs, and a forecast inflated by a slow spell (a busy machine) would otherwise "
        "refuse the class for ever. At most one such probe per probe_s while idle.",
    )

    def excess_scale(self) -> float:
        """Factor on a 0.95-quantile planning excess that gives this quantile's."""
        normal = NormalDist()
        return normal.inv_cdf(self.quantile) / normal.inv_cdf(0.95)


_NO_ADMISSION = ClassAdmission()


def _known_policy(name: str) -> str:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose from: {', '.join(POLICIES)}")
    return name


def _default_admission() -> dict[JobClass, ClassAdmission]:
    return {
        "interactive": ClassAdmission(refuse_late=True, shed_late=True, margin_ms=5.0),
        "batch": ClassAdmission(),
    }


class SchedulerConfig(BaseModel):
    """Everything the scheduling core needs to decide what runs next."""

    model_config = _FROZEN

    policy: Annotated[str, AfterValidator(_known_policy)] = Field(
        "priority_slo",
        description="Which policy orders the queue: a name in scheduling.policies.POLICIES.",
    )
    lanes: int = Field(2, ge=1, le=1024, description="Concurrent executors (workers).")
    tokens: TokenConfig = Field(default_factory=TokenConfig, description="Memory budget.")
    microbatch: MicroBatchConfig = Field(
        default_factory=MicroBatchConfig, description="Micro-batching rules."
    )
    max_dispatch_samples: int | None = Field(
        32,
        ge=1,
        description="Job splitting: a job larger than this runs as several dispatches; "
        "also caps a micro-batch together with microbatch.max_batch. None: no split.",
    )
    max_dispatch_ms: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Service-time budget of one dispatch: with a service model, a dispatch "
        "carries at most the samples predicted to finish within this many ms (at least one). "
        "This bounds how long a lane is held, hence how long an interactive job can wait for "
        "one. None: only the sample caps apply.",
    )
    weights: DynamicWeights = Field(
        default_factory=DynamicWeights, description="Weights of the dynamic policy."
    )
    queue_limit: dict[JobClass, Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="Most queued jobs per class; a submit beyond it raises QueueFull. "
        "None (or a class left out): unbounded.",
    )
    admission: dict[JobClass, ClassAdmission] = Field(
        default_factory=_default_admission,
        description="Per class: refuse at submit a job predicted to miss its deadline, and "
        "shed queued jobs that became hopeless. Default: both on for interactive (with a "
        "5 ms margin for the client's side; the live gateway adds its measured event-loop "
        "lag), off for batch (it accepts late work). A class left out: both off.",
    )
    lane_groups: tuple[LaneGroupConfig, ...] | None = Field(
        None,
        description="Lanes split by the classes they run (e.g. interactive lanes at normal "
        "priority, batch lanes at low priority). None: one group of `lanes` lanes running "
        "every class with max_dispatch_ms. Given: lanes is their total.",
    )

    @model_validator(mode="before")
    @classmethod
    def _lanes_from_groups(cls, data: Any) -> Any:
        # With lane groups, `lanes` is their total: fill it in, so that no one has to
        # keep two numbers in step (a different value given explicitly is an error below).
        if isinstance(data, dict) and isinstance(data.get("lane_groups"), list | tuple):
            counts = [
                g.get("count") if isinstance(g, dict) else getattr(g, "count", None)
                for g in data["lane_groups"]
            ]
            if counts and all(isinstance(c, int) for c in counts) and "lanes" not in data:
                data = {**data, "lanes": sum(counts)}
        return data

    @model_validator(mode="after")
    def _groups_cover_classes(self) -> SchedulerConfig:
        if self.lane_groups is None:
            return self
        names = [g.name for g in self.lane_groups]
        if len(set(names)) != len(names):
            raise ValueError(f"lane_groups: a name is used twice: {names}")
        served = [c for g in self.lane_groups for c in g.classes]
        missing = [c for c in JOB_CLASSES if c not in served]
        twice = sorted({c for c in served if served.count(c) > 1})
        if missing or twice:
            raise ValueError(
                f"lane_groups: every class must be run by exactly one group; "
                f"not run: {missing}, run twice: {twice}"
            )
        total = sum(g.count for g in self.lane_groups)
        if self.lanes != total:
            raise ValueError(
                f"lanes={self.lanes} but lane_groups hold {total} lanes; leave lanes out"
            )
        if self.max_dispatch_ms is not None:
            raise ValueError(
                "max_dispatch_ms is set per lane group when lane_groups are given; "
                "move it into each group"
            )
        return self

    def groups(self) -> tuple[LaneGroupConfig, ...]:
        """The lane groups, lanes numbered in this order (the implicit single group if none)."""
        if self.lane_groups is not None:
            return self.lane_groups
        return (
            LaneGroupConfig(name="default", count=self.lanes, max_dispatch_ms=self.max_dispatch_ms),
        )

    def class_admission(self, job_class: str) -> ClassAdmission:
        """The admission rules of `job_class` (both off if the class is left out)."""
        return self.admission.get(job_class) or _NO_ADMISSION  # type: ignore[call-overload]

    def batch_cap(self) -> int:
        """Most samples a merged dispatch may carry before token limits."""
        if self.max_dispatch_samples is None:
            return self.microbatch.max_batch
        return min(self.microbatch.max_batch, self.max_dispatch_samples)
