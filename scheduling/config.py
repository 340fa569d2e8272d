"""Validated configuration of the scheduling core.

One frozen pydantic model per concern, each field documented and bounded; an
unknown key or a contradictory combination is an error naming the values,
never a silent default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduling.job import JobClass

PolicyName = Literal["fifo", "priority_slo", "batch_aware", "dynamic"]

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
    """The device-memory budget, in tokens (see scheduling.tokens)."""

    model_config = _FROZEN

    capacity: int = Field(1000, ge=1, description="Tokens all running dispatches may hold.")


class DynamicWeights(BaseModel):
    """Weights of the `dynamic` policy's score; higher score dispatches first."""

    model_config = _FROZEN

    interactive: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="Bonus for an interactive job."
    )
    urgency: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="Weight of urgency: 0 with the whole SLO left, 1 once the job can "
        "only just make its deadline (or is late).",
    )
    batchability: float = Field(
        0.3,
        ge=0,
        allow_inf_nan=False,
        description="Weight of how full the micro-batch the job would lead is (0..1).",
    )
    service_time: float = Field(
        0.2,
        ge=0,
        allow_inf_nan=False,
        description="Penalty weight of predicted service time, as t / (t + service_scale_ms).",
    )
    token_cost: float = Field(
        0.1,
        ge=0,
        allow_inf_nan=False,
        description="Penalty weight of the dispatch's tokens as a fraction of capacity.",
    )
    service_scale_ms: float = Field(
        100.0,
        gt=0,
        allow_inf_nan=False,
        description="Predicted service time at which the service-time penalty is half its weight.",
    )
    triage_slos: float = Field(
        1.0,
        ge=0,
        allow_inf_nan=False,
        description="Triage: a job that can no longer meet its deadline (per the service "
        "model) gets no urgency until this many of its SLOs past the deadline, so lanes go "
        "to jobs that can still be saved first; then it ages back in. 0: no triage.",
    )

    @model_validator(mode="after")
    def _urgency_beats_class(self) -> DynamicWeights:
        # A batch job at its deadline must outrank a fresh interactive one, or a
        # steady interactive stream could starve batch work for ever.
        if self.interactive > 0 and self.urgency <= self.interactive:
            raise ValueError(
                f"weights.urgency={self.urgency} must exceed weights.interactive="
                f"{self.interactive}, or interactive traffic can starve batch jobs"
            )
        return self


class SchedulerConfig(BaseModel):
    """Everything the scheduling core needs to decide what runs next."""

    model_config = _FROZEN

    policy: PolicyName = Field("priority_slo", description="Which policy orders the queue.")
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
    shed_late: bool = Field(
        False,
        description="Drop (outcome 'shed') a queued job that cannot meet its deadline "
        "even if started now, per the service-time model.",
    )

    def batch_cap(self) -> int:
        """Most samples a merged dispatch may carry before token limits."""
        if self.max_dispatch_samples is None:
            return self.microbatch.max_batch
        return min(self.microbatch.max_batch, self.max_dispatch_samples)
