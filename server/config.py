"""The gateway's configuration: one frozen, validated model, loadable from YAML.

`GatewayConfig` is the serving config (serving/config.py: models, lanes,
scheduler, predictor, SLOs, device, plugins) plus what only a server has: HTTP,
limits and access control. Left without lanes, it gets a layout sized to this
machine (`default_lane_groups`) and bounded queues.

Every problem is reported at once, one line each, as `file: dotted.key: what is
wrong` (e.g. `gw.yaml: lanes.kind: Input should be 'thread', 'process' or 'ray'`).
An unknown key is an error listing the allowed ones, never a silent default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from scheduling.config_errors import ConfigError, KeyedError, parse_yaml, validate
from server.auth_config import AuthConfig
from server.limits import LimitsConfig
from serving.config import LaneConfig, ModelConfig, PredictorConfig, ServingConfig

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "ConfigFile",
    "GatewayConfig",
    "GatewayConfigError",
    "LaneConfig",
    "ModelConfig",
    "PredictorConfig",
    "default_lane_groups",
    "load_gateway_config",
    "parse_gateway_config",
]

#: Per-class queue bounds the gateway applies unless the config sets its own.
DEFAULT_QUEUE_LIMIT: dict[str, int] = {"interactive": 64, "batch": 256}
#: Service-time budget of one dispatch on lanes shared by every class: half the
#: interactive SLO, so an interactive job waits at most one such dispatch and still
#: has half its budget to run.
DEFAULT_MAX_DISPATCH_MS = 50.0
#: Budget of a dispatch on low-priority batch lanes: interactive work never waits for
#: them (it preempts them), so this only bounds how long a batch job waits for another
#: batch job's dispatch (a quarter of the batch SLO), and lets a batch job fan out.
DEFAULT_BATCH_DISPATCH_MS = 250.0


#: A gateway config is unreadable or invalid; one line per problem.
GatewayConfigError = ConfigError


def default_lane_groups(cores: int) -> list[dict[str, Any]]:
    """The default layout for a machine with `cores` CPUs: priority lanes.

    Interactive lanes at normal OS priority: at least two, so that a request
    arriving while another runs starts at once instead of waiting behind it, each
    with twice its share of the cores (2 cores: two lanes of 2 threads), since
    they are rarely all busy together and a lone request then runs on more
    threads. One single-thread batch lane per core at low priority (SCHED_IDLE),
    each a worker process. Batch work fills every core the interactive lanes
    leave idle and yields it the moment an interactive request (or the event loop
    answering one) needs it: on CPU this is what preemption looks like, so an
    interactive job never waits behind a batch dispatch.

    Measured on 2 cores at 0.7 load (ResNet-18, 70 % interactive batch-1, 30 %
    batch-16): one interactive lane of 2 threads met the 100 ms SLO for 98.1 %
    of interactive requests, two such lanes for 99.2-99.6 %.
    """
    interactive = max(2, cores // 4)
    return [
        {
            "name": "interactive",
            "count": interactive,
            "classes": ["interactive"],
            "threads": min(cores, 2 * max(1, cores // interactive)),
            "priority": "normal",
            "max_dispatch_ms": DEFAULT_MAX_DISPATCH_MS,
        },
        {
            "name": "batch",
            "count": max(1, cores),
            "classes": ["batch"],
            "threads": 1,
            "priority": "low",
            # Processes, not threads: a low-priority thread preempted while holding the
            # interpreter lock stalls the event loop and interactive lanes (measured:
            # 9 of 103 interactive requests refused on thread lanes, 3 on processes).
            "kind": "process",
            "max_dispatch_ms": DEFAULT_BATCH_DISPATCH_MS,
        },
    ]


class GatewayConfig(ServingConfig):
    """Everything `mlws serve` needs; the embedded default serves ResNet-18 on ONNX fp32.

    Left out, the lanes are the default priority layout for this machine's cores
    (interactive lanes at normal priority, one low-priority batch lane per core);
    given lanes.count without lane groups, that many lanes shared by every class
    with max_dispatch_ms 50. queue_limit defaults to interactive 64, batch 256.
    """

    host: str = Field("127.0.0.1", min_length=1, description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    grpc_port: int | None = Field(
        8001,
        ge=0,
        le=65535,
        description="KServe v2 gRPC port on the same host (8001: Triton's); 0 picks a free "
        "one; null: no gRPC.",
    )
    max_body_mb: float = Field(
        32.0,
        gt=0,
        le=4096,
        description="Largest request body in MiB (32: a 32×3×224×224 float32 batch in "
        "base64 JSON); larger bodies get 413.",
    )
    max_request_samples: int = Field(64, ge=1, description="Most samples in one request.")
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="Connections, header and body sizes, read times (server/limits.py).",
    )
    drain_timeout_s: float = Field(
        10.0, ge=0, le=3600, description="On SIGTERM, how long queued work may drain."
    )
    stats_window_s: float = Field(60.0, gt=0, description="Span of /stats percentiles.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of a 429 or 503 answer.")
    model_dir: str = Field(
        "models",
        min_length=1,
        description="The model directory: every onnx_file or weights path a model loaded "
        "at run time (POST /v2/repository/models/{name}/load) names must lie inside it.",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="Bearer-token access control (server/auth.py); no tokens: none.",
    )

    @classmethod
    def _default_layout(cls, scheduler: dict[str, Any]) -> dict[str, Any]:
        return {**scheduler, "lane_groups": default_lane_groups(os.cpu_count() or 1)}

    @classmethod
    def _scheduler_defaults(cls, scheduler: dict[str, Any], shared: bool) -> dict[str, Any]:
        filled = dict(scheduler)
        if shared:
            filled.setdefault("max_dispatch_ms", DEFAULT_MAX_DISPATCH_MS)
        filled.setdefault("queue_limit", dict(DEFAULT_QUEUE_LIMIT))
        return filled

    @model_validator(mode="after")
    def _trained_predictor_only(self) -> GatewayConfig:
        if self.predictor.train_from is not None:
            raise KeyedError(
                "predictor.train_from",
                "the gateway loads a trained file: train one with `mlws predictor train` "
                "and give predictor.path",
            )
        return self

    @model_validator(mode="after")
    def _two_ports(self) -> GatewayConfig:
        # Otherwise the second server to bind fails at start, far from the cause.
        if self.grpc_port and self.grpc_port == self.port:
            raise KeyedError(
                "grpc_port", f"HTTP already listens on port {self.port}: give gRPC another"
            )
        return self

    @property
    def max_body_bytes(self) -> int:
        """max_body_mb in bytes."""
        return int(self.max_body_mb * (1 << 20))


# ------------------------------------------------------------------- loading
def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML gateway config.

    Raises GatewayConfigError with one `file: dotted.key: problem` line per problem.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GatewayConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    data = parse_yaml(text, str(path))
    return parse_gateway_config({} if data is None else data, source=str(path))


def parse_gateway_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed mapping; errors are reported against `source`."""
    config: GatewayConfig = validate(GatewayConfig, data, source)
    return config


@dataclass(frozen=True)
class ConfigFile:
    """The file a gateway was started from, with the command line's overrides of it
    (`mlws serve --port ...`): read again on a reload (server/config_reload.py), it
    gives the config the gateway would start with now."""

    path: str
    #: Top-level keys the command line set (host, port, grpc_port): they win over the file.
    overrides: dict[str, Any] = field(default_factory=dict)

    def read(self) -> GatewayConfig:
        """The file's config with the overrides; GatewayConfigError naming each problem."""
        config = load_gateway_config(self.path)
        if not self.overrides:
            return config
        return parse_gateway_config(
            {**config.model_dump(), **self.overrides}, source="command line"
        )
