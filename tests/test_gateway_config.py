"""GatewayConfig: defaults, YAML loading, and errors that name the dotted key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends.devices import ort_cuda_available
from mlws.cli import main as cli_main
from server.config import (
    GatewayConfig,
    GatewayConfigError,
    LaneConfig,
    load_gateway_config,
    parse_gateway_config,
)
from server.serve import preflight
from tests.gateway_fixtures import REPO, free_port


def test_the_embedded_default_serves_resnet18_on_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    config = GatewayConfig()
    (model,) = config.models
    assert (model.name, model.backends, model.precisions) == ("resnet18", ("onnx",), ("fp32",))
    assert (config.host, config.port, config.lanes.count, config.lanes.kind) == (
        "127.0.0.1",
        8000,
        4,
        "thread",
    )
    assert config.scheduler.policy == "priority_slo"
    assert config.scheduler.queue_limit == {"interactive": 64, "batch": 256}
    assert config.scheduler.lanes == 4 and config.max_request_samples == 64
    inter, batch = config.scheduler.groups()
    assert (inter.count, inter.threads, inter.priority, inter.classes) == (
        2,
        2,
        "normal",
        ("interactive",),
    )
    assert (batch.count, batch.threads, batch.priority, batch.classes) == (2, 1, "low", ("batch",))
    assert config.scheduler.admission["interactive"].refuse_late
    assert config.max_body_bytes == 32 << 20
    # A 32-image 224×224 float32 batch in base64 JSON fits the default body limit.
    assert config.max_body_bytes > 32 * 3 * 224 * 224 * 4 * 4 / 3


def test_scheduler_lanes_follow_lanes_count_and_queue_limits_stay_bounded() -> None:
    config = parse_gateway_config({"lanes": {"count": 3}, "scheduler": {"policy": "fifo"}})
    assert config.scheduler.lanes == 3 and config.scheduler.policy == "fifo"
    assert config.scheduler.queue_limit == {"interactive": 64, "batch": 256}
    (group,) = config.scheduler.groups()  # lanes.count: one group shared by every class
    assert group.classes == ("interactive", "batch") and group.max_dispatch_ms == 50
    with pytest.raises(
        GatewayConfigError, match=r"lanes.count: lanes.count=3 but scheduler.lanes=4"
    ):
        parse_gateway_config({"lanes": {"count": 3}, "scheduler": {"lanes": 4}})


def test_lane_groups_set_the_lane_count() -> None:
    groups = [
        {"name": "interactive", "count": 2, "classes": ["interactive"], "threads": 1},
        {"name": "batch", "count": 3, "classes": ["batch"], "priority": "low"},
    ]
    config = parse_gateway_config({"scheduler": {"lane_groups": groups}})
    assert config.lanes.count == config.scheduler.lanes == 5
    with pytest.raises(GatewayConfigError, match=r"lanes.count=2 but the lane groups hold 5"):
        parse_gateway_config({"lanes": {"count": 2}, "scheduler": {"lane_groups": groups}})


def test_default_layout_scales_with_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    inter, batch = GatewayConfig().scheduler.groups()
    assert (inter.count, inter.threads, batch.count, batch.threads) == (4, 8, 16, 1)
    assert batch.kind == "process" and batch.priority == "low"


def test_threads_per_lane_defaults_to_cores_over_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduling.config import LaneGroupConfig

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert LaneConfig().threads(LaneGroupConfig(name="a", count=3)) == 2
    assert LaneConfig().threads(LaneGroupConfig(name="a", count=16)) == 1
    assert LaneConfig(threads_per_lane=5).threads(LaneGroupConfig(name="a", count=3)) == 5
    assert (
        LaneConfig(threads_per_lane=5).threads(LaneGroupConfig(name="a", count=3, threads=2)) == 2
    )


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"lanes": {"kind": "fiber"}}, "lanes.kind: Input should be 'thread', 'process' or 'ray'"),
        ({"lanes": {"cuont": 2}}, "lanes.cuont: unknown key; allowed: count, kind"),
        ({"portt": 1}, "portt: unknown key; allowed: plugins, models, lanes, scheduler"),
        ({"models": [{"name": "tiny", "backend": "onnx"}]}, "models.0.backend: unknown key"),
        ({"models": [{"name": "bert"}]}, "models.0.name: unknown model 'bert'"),
        (
            {"models": [{"name": "tiny", "backends": ["tf"]}]},
            "models.0.backends.0: unknown backend 'tf'; choose from: onnx, pytorch",
        ),
        ({"scheduler": {"policy": "lifo"}}, "scheduler.policy: unknown policy 'lifo'; choose"),
        ({"default_slo_ms": {"batch": 5}}, "default_slo_ms: renamed to slo_ms"),
        ({"plugins": ["no_such_plugin"]}, "plugins: no module named 'no_such_plugin'"),
        ({"predictor": {"train_from": "p.csv"}}, "predictor.train_from: the gateway loads"),
        ({"models": []}, "models: list at least one model"),
        ({"max_body_mb": 0}, "max_body_mb: Input should be greater than 0"),
        ({"port": 9000, "grpc_port": 9000}, "grpc_port: HTTP already listens on port 9000"),
        ({"scheduler": {"microbatch": {"window_ms": -1}}}, "scheduler.microbatch.window_ms"),
        (
            {"models": [{"name": "x", "onnx_file": "x.onnx", "backends": ["pytorch"]}]},
            "models.0.backends: onnx_file runs only on [onnx]",
        ),
    ],
)
def test_bad_values_name_the_dotted_key(data: dict, needle: str) -> None:
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_config(data, source="gw.yaml")
    assert f"gw.yaml: {needle}" in str(info.value)


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("lanes: {kind: fiber, bogus: 1}\nport: -1\n")
    with pytest.raises(GatewayConfigError) as info:
        load_gateway_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{path}: ") for line in lines)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot read config"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lanes: [\n")
    with pytest.raises(GatewayConfigError, match="invalid YAML"):
        load_gateway_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_gateway_config(empty) == GatewayConfig()


def test_example_config_loads() -> None:
    config = load_gateway_config(REPO / "configs" / "gateway" / "default.yaml")
    assert config == GatewayConfig()


def test_mlws_serve_with_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lanes:\n  kind: fiber\n")
    assert cli_main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "lanes.kind: Input should be 'thread', 'process' or 'ray'"
    assert err == f"mlws serve: error: {path}: {expected}"


def test_mlws_serve_exit_code_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("lanes:\n  count: 2\n  threads: 4\n")
    cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "lanes.threads: unknown key" in line


def test_preflight_refuses_what_a_worker_could_not_load(tmp_path: Path) -> None:
    missing = parse_gateway_config({"models": [{"name": "tiny", "weights": "nope.pt"}]})
    with pytest.raises(ValueError, match=r"models.0.weights: file not found: nope.pt"):
        preflight(missing)
    fp16 = parse_gateway_config({"models": [{"name": "tiny", "precisions": ["fp16"]}]})
    if not ort_cuda_available():
        with pytest.raises(ValueError, match=r"models.0.precisions: precision 'fp16' needs"):
            preflight(fp16)
    preflight(parse_gateway_config({"models": [{"name": "tiny"}]}))


def test_preflight_refuses_a_ray_cluster_nobody_answers_for() -> None:
    port = free_port()
    config = parse_gateway_config(
        {
            "models": [{"name": "tiny"}],
            "lanes": {"kind": "ray", "ray": {"address": f"127.0.0.1:{port}"}},
        }
    )
    with pytest.raises(
        ValueError, match=rf"lanes.ray.address: no Ray cluster answers at 127.0.0.1:{port}"
    ):
        preflight(config)
