"""Experiment config: every problem names the file and the dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.config import ConfigError, ExperimentConfig, load_experiment_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


#: A predictor trained at start from the shipped profile.
PREDICTOR_ON = {"train_from": str(CONFIGS / "profiles" / "cpu.csv")}


def minimal(**overrides: Any) -> dict[str, Any]:
    """The smallest valid config (a fixed service-time table), with overrides."""
    data: dict[str, Any] = {
        "name": "t",
        "duration_s": 5,
        "arrival_rate": 10,
        "service_time": {"fixed": {"resnet18": {"base_ms": 5, "per_sample_ms": 1}}},
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def write(tmp_path: Path, data: Any, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def errors_of(tmp_path: Path, data: Any) -> list[str]:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_experiment_config(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    c = load_experiment_config(write(tmp_path, minimal()))
    assert c.mode == "simulate" and c.precision == "fp32" and c.seed == 0
    assert (c.slo_ms.interactive, c.slo_ms.batch) == (100.0, 1000.0)
    assert c.batch_sizes.batch.support()[0].tolist() == list(range(16, 33))
    assert c.scheduler.lanes == 2
    assert str(tmp_path) in c.source
    with pytest.raises(Exception, match="frozen"):
        c.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_experiment_config(path)
    # Only live_* configs start a gateway; the others run in seconds on a fresh clone.
    assert config.mode == ("live" if path.stem.startswith("live_") else "simulate")
    # A shipped predictor trains from a shipped profile: nothing to download or pre-build.
    assert config.predictor.path is None
    # Lanes are timed by the shipped profile, or by a predictor trained on it.
    timing = config.predictor.train_from if config.service_time.predictor else None
    assert (timing or config.service_time.profile) == "configs/profiles/cpu.csv"


def test_shipped_configs_are_the_five_scenarios() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "fifo_baseline",
        "priority_slo",
        "batch_aware",
        "mixed_slo_microbatch",
        "dynamic_predictor",
    } <= names
    assert load_experiment_config(CONFIGS / "fifo_baseline.yaml").scheduler.policy == "fifo"


def test_unknown_top_level_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    [line] = errors_of(tmp_path, minimal(arival_rate=3))
    assert line.startswith("arival_rate: unknown key; allowed: plugins, models, lanes")
    assert "name, mode, duration_s" in line


def test_unknown_nested_key(tmp_path: Path) -> None:
    [line] = errors_of(tmp_path, minimal(scheduler={"lanez": 2}))
    assert line.startswith("scheduler.lanez: unknown key; allowed: policy, lanes")


def test_bad_nested_value(tmp_path: Path) -> None:
    assert errors_of(tmp_path, minimal(scheduler={"lanes": 0})) == [
        "scheduler.lanes: Input should be greater than or equal to 1"
    ]
    [line] = errors_of(tmp_path, minimal(scheduler={"policy": "lifo"}))
    assert line == (
        "scheduler.policy: unknown policy 'lifo'; choose from: fifo, priority_slo, "
        "batch_aware, dynamic"
    )


def test_unknown_workload_and_backend(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, minimal(workload_mix={"resnet99": 1}, backends={"trt": 1}))
    assert lines == [
        "workload_mix.resnet99: unknown workload 'resnet99'; choose from: resnet18, resnet50, "
        "vit_b_16, tiny",
        "backends.trt: unknown backend 'trt'; choose from: onnx, pytorch",
    ]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, minimal(duration_s=-1, interactive_ratio=2, precision="int8"))
    assert [line.split(":")[0] for line in lines] == [
        "duration_s",
        "interactive_ratio",
        "precision",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"load": 0.5}, "load: set exactly one of arrival_rate"),
        ({"arrival_rate": None}, "load: set exactly one of arrival_rate"),
        ({"batch_sizes": {"batch": {"min": 40, "max": 32}}}, "batch_sizes.batch.min: min=40"),
        (
            {"batch_sizes": {"batch": {"choices": [1, 2], "weights": [1]}}},
            "batch_sizes.batch.weights: 1 weights for 2 choices",
        ),
        ({"batch_sizes": {"interactive": {"min": 1}}}, "batch_sizes.interactive.max: a range"),
        ({"workload_mix": {"resnet50": 1}}, "service_time.fixed: no entry for resnet50"),
        ({"service_time": {"profile": "p.csv", "fixed": {}}}, "service_time: give exactly one"),
        (
            {"service_time": {"profile": "p.csv", "predictor": True}},
            "service_time: give exactly one of profile (a CSV path), fixed (a table) or "
            "predictor: true",
        ),
        ({"service_time": {"predictor": False}}, "service_time: give exactly one"),
        (
            {"service_time": {"predictor": True}},
            "service_time.predictor: needs a predictor: predictor.path or predictor.train_from",
        ),
        (
            {"service_time": {"predictor": True, "stat": "p50_ms"}, "predictor": PREDICTOR_ON},
            "service_time.stat: applies to a profile, not to the predictor",
        ),
        ({"predictor": {"enabled": True}}, "predictor.enabled: removed: a predictor is used"),
        ({"live": {"lane_kind": "process"}}, "live.lane_kind: moved to lanes.kind"),
        ({"live": {"threads_per_lane": 1}}, "live.threads_per_lane: moved to lanes.threads_per"),
        ({"models": [{"name": "tiny"}]}, "workload_mix: resnet18 is not in models"),
        (
            {"models": [{"name": "resnet18", "backends": ["pytorch"]}]},
            "backends: model resnet18 is not served on onnx",
        ),
        ({"scheduler": {"tokens": {"capacity": 50}}}, "scheduler.tokens.capacity: 50 tokens"),
        ({"workload_mix": {"resnet18": 0}}, "workload_mix: weights must not all be 0"),
        ({"mode": "replay"}, "mode: Input should be 'simulate' or 'live'"),
    ],
)
def test_cross_field_problems_name_the_key(
    tmp_path: Path, overrides: dict[str, Any], expected: str
) -> None:
    lines = errors_of(tmp_path, minimal(**overrides))
    assert any(line.startswith(expected) for line in lines), lines


def test_predictor_timed_lanes_accept_threads(tmp_path: Path) -> None:
    timed = minimal(service_time={"predictor": True}, predictor=PREDICTOR_ON)
    config = load_experiment_config(write(tmp_path, timed))
    assert config.service_time.predictor and config.service_time.threads is None
    assert config.service_time.profile is None and config.service_time.fixed is None
    timed["service_time"]["threads"] = 4
    assert load_experiment_config(write(tmp_path, timed)).service_time.threads == 4


def test_missing_files_are_config_errors(tmp_path: Path) -> None:
    [line] = errors_of(tmp_path, minimal(service_time={"profile": "nope.csv", "threads": 1}))
    assert line == "service_time.profile: file not found: nope.csv"
    [line] = errors_of(tmp_path, minimal(predictor={"path": "models/x.pkl"}))
    assert line.startswith("predictor.path: file not found: models/x.pkl")


def test_relative_paths_resolve_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "prof.csv").write_text("x\n")
    config = load_experiment_config(write(tmp_path, minimal(service_time={"profile": "prof.csv"})))
    assert config.resolve_path("prof.csv") == tmp_path / "prof.csv"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read config"):
        load_experiment_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line 2"):
        load_experiment_config(write(tmp_path, "name: x\n  bad: [1\n"))
    with pytest.raises(ConfigError, match="empty"):
        load_experiment_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_experiment_config(write(tmp_path, "- 1\n- 2\n"))


def test_choices_distribution_probabilities() -> None:
    c = ExperimentConfig.model_validate(
        minimal(batch_sizes={"batch": {"choices": [8, 16], "weights": [3, 1]}})
    )
    values, probs = c.batch_sizes.batch.support()
    assert values.tolist() == [8, 16] and probs.tolist() == [0.75, 0.25]
