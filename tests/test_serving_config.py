"""One serving config: every shipped config loads through one class tree, names from registries.

The gateway config and the experiment config both are a `ServingConfig` (models,
lanes, scheduler, predictor, SLOs, device, seed, plugins) plus their own keys;
a live experiment hands its serving part to the gateway it starts unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backends.registry import backend_names
from loadgen.config import ExperimentConfig, load_experiment_config, parse_experiment_config
from loadgen.live import gateway_config_for
from scheduling.config import SchedulerConfig
from scheduling.config_errors import ConfigError
from scheduling.policies import POLICIES
from server.config import GatewayConfig, load_gateway_config, parse_gateway_config
from serving.config import LaneConfig, ModelConfig, PredictorConfig, ServingConfig, SloMs
from workloads.registry import workload_names

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((REPO / "configs").glob("*.yaml"))
GATEWAYS = sorted((REPO / "configs" / "gateway").glob("*.yaml"))
#: The class of each serving key, whichever config embeds it.
PARTS = {
    "models": ModelConfig,
    "lanes": LaneConfig,
    "scheduler": SchedulerConfig,
    "predictor": PredictorConfig,
    "slo_ms": SloMs,
}


def assert_one_serving_tree(config: ServingConfig) -> None:
    assert isinstance(config, ServingConfig)
    serving = config.serving()
    assert type(serving) is ServingConfig
    for key, cls in PARTS.items():
        value = getattr(config, key)
        assert all(type(v) is cls for v in value) if key == "models" else type(value) is cls
        assert getattr(serving, key) == value, key
    assert (serving.device, serving.seed, serving.onnx_dir) == (
        config.device,
        config.seed,
        config.onnx_dir,
    )


def test_both_configs_are_the_serving_config_plus_their_own_keys() -> None:
    for embedding in (GatewayConfig, ExperimentConfig):
        assert issubclass(embedding, ServingConfig)
        for key, field in ServingConfig.model_fields.items():
            assert embedding.model_fields[key].annotation == field.annotation, (embedding, key)
    own = set(GatewayConfig.model_fields) & set(ExperimentConfig.model_fields)
    assert own == set(ServingConfig.model_fields)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_config_is_a_serving_config(path: Path) -> None:
    config = load_experiment_config(path)
    assert type(config) is ExperimentConfig
    assert_one_serving_tree(config)


@pytest.mark.parametrize("path", GATEWAYS, ids=lambda p: p.name)
def test_every_shipped_gateway_config_is_a_serving_config(path: Path) -> None:
    config = load_gateway_config(path)
    assert type(config) is GatewayConfig
    assert_one_serving_tree(config)


def test_the_compose_gateway_runs_a_shipped_config() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    command = compose["services"]["gateway"]["command"]
    container_path = command[command.index("--config") + 1]
    path = REPO / container_path.removeprefix("/app/")
    assert path in GATEWAYS
    assert_one_serving_tree(load_gateway_config(path))


def readme_yaml_blocks() -> list[dict[str, Any]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [data for data in map(yaml.safe_load, blocks) if isinstance(data, dict)]


def test_readme_config_examples_load() -> None:
    checked = 0
    for data in readme_yaml_blocks():
        if {"name", "duration_s"} <= set(data):
            assert_one_serving_tree(parse_experiment_config(data, source="README.md"))
        elif set(data) <= set(GatewayConfig.model_fields):
            assert_one_serving_tree(parse_gateway_config(data, source="README.md"))
        else:
            continue  # another program's YAML (Prometheus)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_a_started_gateway_gets_the_experiments_serving_part(path: Path) -> None:
    experiment = load_experiment_config(path)
    if experiment.predictor.used:
        return  # a learned predictor drives simulations only: live runs refuse it
    gateway = parse_gateway_config(gateway_config_for(experiment))
    assert gateway.serving() == experiment.serving()


def test_a_resolved_experiment_copy_loads_to_the_same_config(tmp_path: Path) -> None:
    for path in EXPERIMENTS:
        config = load_experiment_config(path)
        again = parse_experiment_config(config.model_dump(mode="json"), source=str(path))
        assert again == config, path.name


def test_the_experiments_models_default_to_its_traffic() -> None:
    data = {
        "name": "mix",
        "duration_s": 5,
        "arrival_rate": 5,
        "workload_mix": {"resnet18": 2, "tiny": 1, "resnet50": 0},
        "backends": {"pytorch": 1, "onnx": 1},
        "precision": "fp32",
        "service_time": {"fixed": {"*": {"base_ms": 1, "per_sample_ms": 1}}},
    }
    config = parse_experiment_config(data)
    assert [(m.name, m.backends, m.precisions) for m in config.models] == [
        ("resnet18", ("pytorch", "onnx"), ("fp32",)),
        ("tiny", ("pytorch", "onnx"), ("fp32",)),
    ]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"models": [{"name": "bert"}]}, "models.0.name: unknown model 'bert'; choose from {w}"),
        (
            {"models": [{"name": "tiny", "backends": ["tvm"]}]},
            "models.0.backends.0: unknown backend 'tvm'; choose from: {b}",
        ),
        (
            {"scheduler": {"policy": "lifo"}},
            "scheduler.policy: unknown policy 'lifo'; choose from: {p}",
        ),
    ],
)
def test_an_unknown_name_lists_the_registrys_names(data: dict[str, Any], needle: str) -> None:
    expected = needle.format(
        w=", ".join(workload_names()), b=", ".join(backend_names()), p=", ".join(POLICIES)
    )
    with pytest.raises(ConfigError) as info:
        parse_gateway_config(data, source="gw.yaml")
    assert f"gw.yaml: {expected}" in str(info.value)
    experiment = {
        "name": "x",
        "duration_s": 1,
        "arrival_rate": 1,
        "service_time": {"fixed": {"*": {"base_ms": 1, "per_sample_ms": 1}}},
        "workload_mix": {"tiny": 1},
        **data,
    }
    with pytest.raises(ConfigError) as info:
        parse_experiment_config(experiment, source="x.yaml")
    assert f"x.yaml: {expected}" in str(info.value)


def test_every_registered_policy_is_a_valid_name() -> None:
    for name in POLICIES:
        assert SchedulerConfig(policy=name).policy == name


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"default_slo_ms": {"interactive": 50}}, "default_slo_ms: renamed to slo_ms"),
        ({"predictor": {"enabled": False}}, "predictor.enabled: removed: a predictor is used"),
    ],
)
def test_old_spellings_name_the_new_key(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"gw.yaml: {needle}")):
        parse_gateway_config(data, source="gw.yaml")
