"""Which scheduling a running gateway uses, as /stats and /v1/models report it.

The policy and lane layout come from the config, computed from the cores when
it gives none; an operator (or a load test comparing policies) should not have
to guess which one a gateway resolved to.
"""

from __future__ import annotations

from typing import Any

from server.config import GatewayConfig


def describe_scheduler(config: GatewayConfig) -> dict[str, Any]:
    """The policy (each lane group runs its own instance of it) and every lane group."""
    groups = [
        {
            "name": group.name,
            "count": group.count,
            "classes": list(group.classes),
            "threads": config.lanes.threads(group),
            "priority": group.priority,
            "kind": group.kind or config.lanes.kind,
            "max_dispatch_ms": group.max_dispatch_ms,
        }
        for group in config.scheduler.groups()
    ]
    return {"policy": config.scheduler.policy, "lane_groups": groups}
