"""Policy registry: name → class. Adding a policy is one file and one line here."""

from __future__ import annotations

from scheduling.policies.base import HeapPolicy, Policy, PolicySettings, QueueView, ScanPolicy
from scheduling.policies.batch_aware import BatchAwarePolicy
from scheduling.policies.dynamic import DynamicPolicy
from scheduling.policies.fifo import FifoPolicy
from scheduling.policies.priority_slo import PrioritySloPolicy
from scheduling.service_time import ServiceTimeModel

POLICIES: dict[str, type[HeapPolicy] | type[ScanPolicy]] = {
    FifoPolicy.name: FifoPolicy,
    PrioritySloPolicy.name: PrioritySloPolicy,
    BatchAwarePolicy.name: BatchAwarePolicy,
    DynamicPolicy.name: DynamicPolicy,
}


def make_policy(
    name: str, config: PolicySettings, service_model: ServiceTimeModel | None = None
) -> Policy:
    """A fresh policy instance by registry name; ValueError names the known ones."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from: {', '.join(POLICIES)}") from None
    return cls(config, service_model)


__all__ = ["POLICIES", "Policy", "QueueView", "make_policy"]
