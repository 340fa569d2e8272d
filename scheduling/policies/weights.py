"""The `dynamic` policy's weights: its part of the scheduler's config.

Kept beside the policies rather than in scheduling/config.py, so that the
policies import nothing of the config (which asks their registry for names).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(extra="forbid", frozen=True)


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
