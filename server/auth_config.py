"""The `auth` section of the gateway config: which bearer tokens exist, and their roles.

A token is never written in the config: an entry names the file or the environment
variable that holds it, so the config can be committed, shared and logged. The tokens
themselves are read once at start (server/auth.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduling.config_errors import KeyedError

#: inference: /infer, model metadata and the /v2 protocol; operations: the operator's
#: views (/stats, /v1/lanes, /v1/profile, /v1/predictor) and /metrics; metrics: /metrics
#: only (a scraper's token that reads nothing else). server/auth.py maps routes to them.
Role = Literal["inference", "operations", "metrics"]
#: Keys someone might use to put the secret itself into the config: refused by name.
_INLINE_SECRET_KEYS = ("token", "value", "secret", "password")


class TokenConfig(BaseModel):
    """One bearer token: where it is read from, and what it may call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="A label for this token in logs and errors (never the token itself).",
    )
    roles: tuple[Role, ...] = Field(
        min_length=1, description="What the token may call: inference, operations, metrics."
    )
    file: str | None = Field(
        None, description="A file holding the token (surrounding whitespace is ignored)."
    )
    env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="An environment variable holding the token.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _INLINE_SECRET_KEYS:
                if key in data:
                    raise KeyedError(
                        key, "tokens never go in the config: name a `file` or an `env` variable"
                    )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        if (self.file is None) == (self.env is None):
            raise KeyedError("file", "give exactly one of `file` or `env` (where the token is)")
        if len(set(self.roles)) != len(self.roles):
            raise KeyedError("roles", f"lists a role twice: {list(self.roles)}")
        return self

    @property
    def source(self) -> str:
        """Where the token comes from, for messages: `file x` or `env X`."""
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


class AuthConfig(BaseModel):
    """Bearer-token access control; no tokens (the default) means none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenConfig, ...] = Field(
        (),
        description="Accepted tokens and their roles. Empty: no access control (every "
        "route is open). Several tokens may share a role (e.g. an old and a new one while "
        "rotating).",
    )
    metrics_open: bool = Field(
        False,
        description="Leave GET /metrics open even with tokens configured (a scraper on a "
        "trusted network); false: it needs the operations or metrics role.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AuthConfig:
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise KeyedError("tokens", f"lists a name twice: {names}")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any route needs a token."""
        return bool(self.tokens)
