"""A backend added from outside the tree: one module, named in the config's `plugins:`.

The module is written into a temporary directory on PYTHONPATH; nothing else in
the project changes. A real gateway (`mlws serve` in a child process) imports
it while reading its config, serves a model on it from a thread lane and from a
process lane (whose spawned worker imports the plugin again), and answers
with the backend's fixed logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.gateway_fixtures import SubprocessServer

PLUGIN = "mlws_test_fixed_backend"
#: tiny's 10 logits, as the plugin's runner answers every sample.
LOGITS = [0.5, 3.0, -1.0, 2.0, 0.0, 1.0, -2.0, 0.25, 4.0, -0.5]

PLUGIN_SOURCE = f'''
"""A backend whose runner answers fixed logits, whatever the input."""

import os

import numpy as np

from backends.registry import register_backend

LOGITS = np.array({LOGITS!r}, dtype=np.float32)


class FixedRunner:
    backend = "fixed"

    def __init__(self, workload, options):
        self.workload = workload.name
        self.precision = options.precision
        self.device = "cpu"
        self.threads = options.threads

    def run(self, batch):
        return np.tile(LOGITS, (len(batch), 1))

    def close(self):
        pass


class FixedBackend:
    name = "fixed"

    def load(self, workload, options):
        return FixedRunner(workload, options)


register_backend(FixedBackend.name, FixedBackend)
'''


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the plugin module, on the PYTHONPATH a child process inherits."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    rest = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(directory), rest) if p))
    return directory


def gateway_yaml(tmp_path: Path) -> Path:
    config = {
        "plugins": [PLUGIN],
        "models": [{"name": "tiny", "backends": ["fixed"]}],
        "scheduler": {
            "lane_groups": [
                {"name": "interactive", "count": 1, "classes": ["interactive"], "threads": 1},
                {"name": "batch", "count": 1, "classes": ["batch"], "threads": 1},
            ],
            "microbatch": {"enabled": False},
        },
        "lanes": {"kind": "thread"},
        "slo_ms": {"interactive": 10_000, "batch": 10_000},
        "drain_timeout_s": 2,
    }
    # The batch group's lane is a spawned worker process: it must import the plugin too.
    config["scheduler"]["lane_groups"][1]["kind"] = "process"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_plugin_backend_is_served_by_a_real_gateway(plugin_path: Path, tmp_path: Path) -> None:
    with (
        SubprocessServer(gateway_yaml(tmp_path)) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as client,
    ):
        models = client.get("/v1/models").json()["models"]
        assert [(m["name"], m["backends"]) for m in models] == [("tiny", ["fixed"])]
        lanes = {row["group"]: row["kind"] for row in client.get("/v1/lanes").json()["lanes"]}
        assert lanes == {"interactive": "thread", "batch": "process"}
        for job_class in ("interactive", "batch"):
            body = {"model": "tiny", "class": job_class, "batch_size": 3, "return": "logits"}
            r = client.post("/infer", json=body)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["backend"] == "fixed" and answer["class"] == job_class
            assert np.allclose(answer["outputs"], [LOGITS] * 3)
            top = client.post("/infer", json={**body, "return": "top_k", "top_k": 1}).json()
            assert [row[0]["index"] for row in top["outputs"]] == [8, 8, 8]
        metadata = client.get("/v2/models/tiny").json()
        assert metadata["platform"] == "fixed"  # the backend sets no Triton name of its own


class _Named:
    """A stand-in backend class (never loaded)."""

    name = "stand_in"

    def load(self, workload: object, options: object) -> None:
        raise NotImplementedError


def test_registration_is_idempotent_and_never_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends import registry

    monkeypatch.setattr(registry, "BACKENDS", dict(registry.BACKENDS))  # restored after
    registry.register_backend("stand_in", _Named)
    registry.register_backend("stand_in", _Named)  # a module imported twice: harmless
    assert registry.backend_names() == ["onnx", "pytorch", "stand_in"]
    assert registry.triton_names("stand_in") == ("stand_in", "stand_in")
    assert not registry.cuda_available("stand_in") and registry.onnx_file_backends() == ["onnx"]
    with pytest.raises(ValueError, match="backend 'onnx' is already registered"):
        registry.register_backend("onnx", _Named)
    with pytest.raises(ValueError, match="use letters, digits"):
        registry.register_backend("no spaces", _Named)


def test_a_plugin_that_fails_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.config import GatewayConfigError, parse_gateway_config

    (tmp_path / "mlws_test_broken_plugin.py").write_text("raise RuntimeError('no licence')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_config({"plugins": ["mlws_test_broken_plugin"]}, source="gw.yaml")
    assert str(info.value) == (
        "gw.yaml: plugins: mlws_test_broken_plugin: RuntimeError: no licence"
    )
    with pytest.raises(GatewayConfigError, match=r"models\.0\.backends\.0: unknown backend"):
        parse_gateway_config({"models": [{"name": "tiny", "backends": ["fixed"]}]}, "gw.yaml")
