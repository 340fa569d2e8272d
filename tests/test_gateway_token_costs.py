"""GET /v1/models shows each model's token cost per precision and where it came from:
measured by a profile named as `scheduler.tokens.profile`, or the hand-set table."""

from __future__ import annotations

from pathlib import Path

from server.gateway import with_device_capacity
from tests.gateway_fixtures import LiveServer, tiny_config

HEADER = "workload,backend,precision,device,batch_size,threads,resident_mb,per_sample_mb"


def test_models_show_the_measured_cost_and_its_source(onnx_dir: Path, tmp_path: Path) -> None:
    profile = tmp_path / "memory.csv"
    profile.write_text(
        f"{HEADER}\ntiny,onnx,fp32,cpu,1,1,12.5,0.25\ntiny,onnx,fp32,cpu,64,1,12.5,0.25\n"
    )
    tokens = {"profile": str(profile), "capacity": 100}
    config = tiny_config(onnx_dir, scheduler={"tokens": tokens, "max_dispatch_samples": 1000})
    with LiveServer(config) as live, live.client() as http:
        (model,) = http.get("/v1/models").json()["models"]
        assert model["token_cost"] == {
            "fp32": {"base_mb": 12.5, "per_sample_mb": 0.25, "source": f"profile {profile}"}
        }
        # 12.5 + 0.25 × 350 = 100 MiB: the capacity, where the table (10 + 4 a sample) held 22.
        assert model["max_dispatch_samples"] == {"fp32": 350}
        body = {"model": "tiny", "class": "batch", "batch_size": 2}
        assert http.post("/infer", json=body).status_code == 200


def test_a_device_reserve_leaves_the_capacity_alone_on_cpu(onnx_dir: Path) -> None:
    tokens = {"capacity": 700, "device_reserve_mb": 1024}
    config = tiny_config(onnx_dir, device="cpu", scheduler={"tokens": tokens})
    assert with_device_capacity(config).scheduler.tokens.capacity == 700
