"""The gateway's `limits` config section: what one client may cost the process.

Each limit closes one way a client could exhaust the server without sending a
single valid request: holding connections open (`max_connections`, the idle and
slow-header timeouts), sending huge or endless headers (`max_header_bytes`,
`max_headers`, `header_timeout_s`), trickling a body (`body_timeout_s`), or
sending a JSON body whose parsed form is many times its size
(`max_json_values`). Where each is enforced: server/http_guard.py (connections,
headers, read times) and server/json_budget.py (JSON values).

The defaults are what a production gateway on one machine would choose; tests
configure small ones so that a refusal happens quickly.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LimitsConfig(BaseModel):
    """Limits that protect the process from slow, huge or numerous requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open client connections at once; one more is answered 503 and closed. "
        "Keep it below the process's open-file limit (ulimit -n).",
    )
    backlog: int = Field(
        2048, ge=1, le=65535, description="Listen backlog: connections the kernel queues."
    )
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        le=16 << 20,
        description="Bytes of request line and headers; more is answered 431 and closed.",
    )
    max_headers: int = Field(
        100, ge=8, le=100_000, description="Header lines per request; more is answered 431."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="From a connection's start (or a request's first byte) to the end of its "
        "headers; a slower client is answered 408 (an idle one is closed).",
    )
    body_timeout_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="From the end of the headers to the end of the body (a 32 MiB body needs "
        "1.6 MiB/s); a slower client is answered 408 and closed.",
    )
    keep_alive_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="An idle keep-alive connection is closed after this long.",
    )
    max_json_values: int = Field(
        1 << 20,
        ge=1024,
        le=1 << 30,
        description="Array elements in a JSON body. A nested-list number costs ~40 bytes "
        "while parsed (1 Mi values: ~45 MB, 7 samples of 3×224×224); more is answered 413 "
        "suggesting base64 or binary inputs, which cost 4 bytes a value.",
    )
