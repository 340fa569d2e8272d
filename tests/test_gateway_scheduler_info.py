"""/stats and /v1/models say which scheduling policy and lane groups the gateway runs."""

from __future__ import annotations

from pathlib import Path

from tests.gateway_fixtures import LiveServer, tiny_config

GROUPS = [
    {"name": "fast", "count": 1, "classes": ["interactive"], "threads": 1},
    {"name": "bulk", "count": 1, "classes": ["batch"], "threads": 1, "max_dispatch_ms": 250},
]


def test_policy_and_lane_groups_are_reported(onnx_dir: Path) -> None:
    scheduler = {"policy": "dynamic", "lane_groups": GROUPS}
    config = tiny_config(onnx_dir, lanes={"kind": "thread"}, scheduler=scheduler)
    with LiveServer(config) as live, live.client() as client:
        stats = client.get("/stats").json()
        models = client.get("/v1/models").json()
    assert stats["phase"] == "ready" and stats["startup_error"] is None
    assert "classes" in stats and "queue_depth" in stats  # the existing fields stay
    assert models["models"][0]["name"] == "tiny"
    for answer in (stats["scheduler"], models["scheduler"]):
        assert answer["policy"] == "dynamic"
        groups = {g["name"]: g for g in answer["lane_groups"]}
        assert list(groups) == ["fast", "bulk"]
        assert groups["fast"]["classes"] == ["interactive"]
        assert groups["bulk"] == {
            "name": "bulk",
            "count": 1,
            "classes": ["batch"],
            "threads": 1,
            "priority": "normal",
            "kind": "thread",
            "max_dispatch_ms": 250.0,
        }
