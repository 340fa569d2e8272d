"""The scheduler's config: defaults, bounds, unknown keys, cross-field checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scheduling.config import DynamicWeights, MicroBatchConfig, SchedulerConfig, TokenConfig


def test_defaults() -> None:
    c = SchedulerConfig()
    assert (c.policy, c.lanes, c.tokens.capacity, c.max_dispatch_samples) == (
        "priority_slo",
        2,
        1000,
        32,
    )
    assert c.microbatch == MicroBatchConfig(enabled=True, window_ms=10, max_batch=128)
    assert c.microbatch.classes == ("batch",)
    assert c.queue_limit is None and c.lane_groups is None
    assert c.admission["interactive"].refuse_late and c.admission["interactive"].shed_late
    assert not c.admission["batch"].refuse_late and not c.admission["batch"].shed_late
    assert c.batch_cap() == 32


def test_every_field_is_documented() -> None:
    for model in (SchedulerConfig, MicroBatchConfig, TokenConfig, DynamicWeights):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        SchedulerConfig().lanes = 3  # type: ignore[misc]


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="lane_count"):
        SchedulerConfig.model_validate({"lane_count": 2})
    with pytest.raises(ValidationError, match="window"):
        SchedulerConfig.model_validate({"microbatch": {"window": 5}})


@pytest.mark.parametrize(
    "data",
    [
        {"lanes": 0},
        {"policy": "lifo"},
        {"max_dispatch_samples": 0},
        {"tokens": {"capacity": 0}},
        {"microbatch": {"window_ms": -1}},
        {"microbatch": {"max_batch": 0}},
        {"microbatch": {"classes": ["premium"]}},
        {"queue_limit": {"batch": 0}},
        {"queue_limit": {"bulk": 3}},
        {"weights": {"urgency": -1}},
        {"microbatch": {"window_ms": float("inf")}},
    ],
)
def test_bad_values_are_rejected(data: dict) -> None:
    with pytest.raises(ValidationError):
        SchedulerConfig.model_validate(data)


def test_cross_field_errors_name_the_values() -> None:
    with pytest.raises(ValidationError, match=r"enabled=True.*classes=\(\)"):
        MicroBatchConfig(enabled=True, classes=())
    with pytest.raises(ValidationError, match="twice"):
        MicroBatchConfig(classes=("batch", "batch"))
    with pytest.raises(ValidationError, match=r"urgency=1\.0 must exceed weights.interactive=2\.0"):
        DynamicWeights(urgency=1.0, interactive=2.0)
    MicroBatchConfig(enabled=False, classes=())  # nothing to merge, nothing contradictory
    DynamicWeights(interactive=0.0, urgency=0.0)


def test_split_and_batch_caps_combine() -> None:
    assert SchedulerConfig(max_dispatch_samples=None).batch_cap() == 128
    c = SchedulerConfig(max_dispatch_samples=64, microbatch=MicroBatchConfig(max_batch=16))
    assert c.batch_cap() == 16


def test_round_trips_through_a_dict() -> None:
    c = SchedulerConfig(
        policy="dynamic",
        queue_limit={"interactive": 10},
        admission={"batch": {"shed_late": True}},
        lane_groups=[
            {"name": "interactive", "count": 1, "classes": ["interactive"], "threads": 2},
            {"name": "batch", "count": 2, "classes": ["batch"], "max_dispatch_ms": 300},
        ],
    )
    assert c.lanes == 3
    assert SchedulerConfig.model_validate(c.model_dump()) == c


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"lane_groups": [{"name": "a", "count": 1, "classes": ["interactive"]}]},
            r"not run: \['batch'\]",
        ),
        (
            {"lane_groups": [{"name": "a", "count": 1}, {"name": "b", "count": 1}]},
            r"run twice: \['batch', 'interactive'\]",
        ),
        (
            {"lanes": 4, "lane_groups": [{"name": "a", "count": 2}]},
            "lanes=4 but lane_groups hold 2 lanes",
        ),
        (
            {"max_dispatch_ms": 50, "lane_groups": [{"name": "a", "count": 2}]},
            "max_dispatch_ms is set per lane group",
        ),
        ({"lane_groups": [{"name": "a", "count": 1}, {"name": "a", "count": 1}]}, "used twice"),
    ],
)
def test_lane_groups_must_partition_the_classes(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SchedulerConfig.model_validate(data)
