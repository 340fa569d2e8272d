"""`lanes.ray`: where Ray lanes run, what each lane's actor asks of its node, and how
often the gateway looks at the cluster's nodes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Resources Ray counts itself: a lane asks for them through threads and num_gpus.
_BUILT_IN = {"CPU": "a lane's CPUs are its threads", "GPU": "use lanes.ray.num_gpus"}


class RayLanesConfig(BaseModel):
    """The Ray cluster of `lanes.kind: ray` (or of a lane group whose kind is ray)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(
        None,
        description="An existing cluster: HOST:PORT of its head (e.g. 127.0.0.1:6379), or "
        "auto (the cluster this machine's `ray start` joined, or RAY_ADDRESS). None: start "
        "a local Ray instance, on loopback.",
    )
    per_node: bool = Field(
        False,
        description="true: every alive node gets each lane group's count of lanes, and so "
        "does a node that joins later; false: the groups' counts in all, spread over the "
        "nodes by Ray.",
    )
    num_gpus: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="GPUs each lane's actor asks for (fractions share one); with device: cuda.",
    )
    resources: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description='Custom Ray resources each lane\'s actor asks for, e.g. {"mlws-lane": 1}: '
        "only nodes started with them (`ray start --resources`) get lanes.",
    )
    membership_s: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="How often the gateway reads the cluster's node list (nodes that joined "
        "or left).",
    )

    @field_validator("address")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"give HOST:PORT of the cluster's head, or auto; got {value!r}")
        return value

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if not name:
                raise ValueError("a resource needs a name")
            if name in _BUILT_IN:
                raise ValueError(f"{name} is not a custom resource: {_BUILT_IN[name]}")
        return value
