"""Bearer-token access control: the role each route needs, and the middleware that checks.

`ROUTE_ROLES` is the one place that says who may call what, keyed by the route's path
template as FastAPI declares it (a role covers every method of the path). A new route
needs one line there; a route missing from it is treated as an operator's route (fail
closed), and tests/test_gateway_auth.py fails until it is listed. A path no route answers
is left to routing's 404.

With `auth.tokens` configured, `install_auth` reads every token once at start (from the
file or environment variable its entry names) and keeps only its SHA-256 digest and
roles. A request to a route that needs a role must carry ``Authorization: Bearer
<token>``: none, or a token the gateway does not know, is 401 with ``WWW-Authenticate:
Bearer``; a known token without the route's role is 403. Digests are compared with
`hmac.compare_digest` against every configured token, so the time taken does not tell
how much of a guess was right. Each refusal is counted in mlws_auth_failures_total
{reason}. The check runs before routing reads the body: a client without a token cannot
make the gateway read or decode anything.

Without tokens there is no access control; binding an address other than loopback
then logs a warning at start.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth_config import AuthConfig, TokenConfig
from server.config import GatewayConfig
from server.echo import clip
from server.errors import Forbidden, GatewayError, Unauthorized, error_response
from server.kserve import v2_error

log = logging.getLogger("mlws.server")

OPEN: frozenset[str] = frozenset()
INFERENCE: frozenset[str] = frozenset({"inference"})
OPERATIONS: frozenset[str] = frozenset({"operations"})
#: /metrics: the operator, or a scraper's token that may read nothing else.
SCRAPE: frozenset[str] = frozenset({"operations", "metrics"})

#: Route path template → the roles that may call it (any one of them); OPEN: no token.
ROUTE_ROLES: dict[str, frozenset[str]] = {
    # Probes stay open: orchestrators and load balancers call them without credentials.
    "/healthz": OPEN,
    "/readyz": OPEN,
    "/v2/health/live": OPEN,
    "/v2/health/ready": OPEN,
    # The API's own description holds no data; Swagger UI loads it without a token.
    "/openapi.json": OPEN,
    "/docs": OPEN,
    "/docs/oauth2-redirect": OPEN,
    "/redoc": OPEN,
    "/docs-static/{path:path}": OPEN,  # Swagger UI's and ReDoc's scripts (server/docs_ui.py)
    "/infer": INFERENCE,
    "/v1/models": INFERENCE,
    "/v2": INFERENCE,
    "/v2/models/{name}": INFERENCE,
    "/v2/models/{name}/ready": INFERENCE,
    "/v2/models/{name}/infer": INFERENCE,
    "/v2/models/{name}/config": INFERENCE,
    "/v2/models/{name}/versions/{version}": INFERENCE,
    "/v2/models/{name}/versions/{version}/ready": INFERENCE,
    "/v2/models/{name}/versions/{version}/infer": INFERENCE,
    "/v2/models/{name}/versions/{version}/config": INFERENCE,
    # Loading and unloading models changes what the gateway serves: the operator's.
    "/v2/repository/index": OPERATIONS,
    "/v2/repository/models/{name}/load": OPERATIONS,
    "/v2/repository/models/{name}/unload": OPERATIONS,
    "/v2/{rest:path}": INFERENCE,
    "/v1/lanes": OPERATIONS,
    "/v1/profile": OPERATIONS,
    "/v1/predictor": OPERATIONS,
    "/v1/config/reload": OPERATIONS,  # changes what the gateway serves, as the repository
    "/stats": OPERATIONS,
    "/metrics": SCRAPE,
}
#: What a route missing from ROUTE_ROLES needs: the operator's role, never nothing.
UNLISTED = OPERATIONS
#: Shorter tokens are refused at start: a guessable token is no access control.
MIN_TOKEN_CHARS = 16
REALM = "mlws"


class AuthSetupError(ValueError):
    """A token cannot be read at start: one line naming the config key and the source."""


@dataclass(frozen=True)
class _Token:
    #: SHA-256 of the token: the token itself is not kept.
    digest: bytes
    roles: frozenset[str]


class TokenStore:
    """The accepted tokens, as digests; answers which roles a presented token has."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tuple(tokens)

    def roles_of(self, presented: bytes) -> frozenset[str] | None:
        """The roles of `presented` (the union, if several entries hold it); None if unknown.

        Every entry is compared, with no early exit, in constant time per entry.
        """
        digest = hashlib.sha256(presented).digest()
        roles: set[str] = set()
        known = False
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                known = True
                roles |= token.roles
        return frozenset(roles) if known else None


def read_token(entry: TokenConfig, key: str, environ: Mapping[str, str]) -> str:
    """The token `entry` names, stripped; AuthSetupError naming `key` if it is unusable."""
    if entry.file is not None:
        try:
            token = Path(entry.file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise AuthSetupError(
                f"{key}.file: cannot read token file {entry.file}: {reason}"
            ) from None
    else:
        assert entry.env is not None
        token = environ.get(entry.env, "").strip()
        if not token:
            raise AuthSetupError(f"{key}.env: environment variable {entry.env} is unset or empty")
    if len(token) < MIN_TOKEN_CHARS:
        raise AuthSetupError(
            f"{key}: the token in {entry.source} has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if any(c.isspace() or not c.isprintable() for c in token):
        raise AuthSetupError(
            f"{key}: the token in {entry.source} contains whitespace or control characters"
        )
    return token


def load_tokens(config: AuthConfig, environ: Mapping[str, str] | None = None) -> TokenStore:
    """Read every configured token once; keep digests and roles only."""
    env = os.environ if environ is None else environ
    tokens = []
    for i, entry in enumerate(config.tokens):
        token = read_token(entry, f"auth.tokens.{i}", env)
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        tokens.append(_Token(digest, frozenset(entry.roles)))
    return TokenStore(tokens)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) listens on this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def public_bind_warning(config: GatewayConfig) -> str | None:
    """The start-up warning for a non-loopback bind without access control, or None."""
    if config.auth.enabled or is_loopback(config.host):
        return None
    return (
        f"WARNING: listening on {config.host}, not a loopback address, with no access "
        "control: anyone who reaches this port can run inference and read /metrics, /stats "
        "and /v1/profile. Configure auth.tokens (README: Access control) or bind 127.0.0.1."
    )


def install_auth(app: FastAPI, config: GatewayConfig) -> None:
    """Warn about a public bind without tokens; with tokens, check every request.

    Raises AuthSetupError when a configured token cannot be read.
    """
    warning = public_bind_warning(config)
    if warning is not None:
        log.warning("%s", warning)
    if not config.auth.enabled:
        return
    store = load_tokens(config.auth)
    app.add_middleware(BearerAuth, store=store, metrics_open=config.auth.metrics_open)
    names = ", ".join(f"{t.name} ({'+'.join(t.roles)})" for t in config.auth.tokens)
    log.info("access control: bearer tokens %s", names)


@dataclass(frozen=True)
class Rule:
    """One line of ROUTE_ROLES, compiled the way Starlette compiles the route's path."""

    template: str
    pattern: re.Pattern[str]
    roles: frozenset[str]


def compile_rules(table: Mapping[str, frozenset[str]]) -> tuple[Rule, ...]:
    """The table's rules in matching order: a catch-all ({x:path}) answers only what no
    specific route does, as in routing (/v2/models/{name}/infer before /v2/{rest:path})."""
    rules = [Rule(t, compile_path(t)[0], roles) for t, roles in table.items()]
    return tuple(sorted(rules, key=lambda rule: ":path}" in rule.template))


RULES = compile_rules(ROUTE_ROLES)


def rule_for(path: str) -> Rule | None:
    """The rule of the route that answers `path`, or None if the table has none."""
    return next((rule for rule in RULES if rule.pattern.match(path)), None)


def route_path(scope: Scope) -> str:
    """The request's path below the app's root_path, the one routes are matched against."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def routed(routes: list[BaseRoute], scope: Scope) -> bool:
    """Whether any of the app's routes answers the request's path (by any method)."""
    probe = dict(scope)  # matching may note things in the scope: keep the real one clean
    return any(route.matches(probe)[0] != Match.NONE for route in routes)


class BearerAuth:
    """ASGI middleware: refuse a request whose route needs a role its token lacks."""

    def __init__(self, app: ASGIApp, store: TokenStore, metrics_open: bool) -> None:
        self.app = app
        self.store = store
        self.metrics_open = metrics_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where, needed = self.needs(scope)
            if needed:
                refusal = self.check(scope, f"{scope['method']} {where}", needed)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def needs(self, scope: Scope) -> tuple[str, frozenset[str]]:
        """(the route as messages name it, the roles that may call it; OPEN: anyone)."""
        path = route_path(scope)
        rule = rule_for(path)
        if rule is not None:
            if rule.template == "/metrics" and self.metrics_open:
                return rule.template, OPEN
            return rule.template, rule.roles
        if routed(scope["app"].router.routes, scope):
            return clip(path, 100), UNLISTED
        return path, OPEN  # no route: routing answers 404, and a 404 tells nothing

    def check(self, scope: Scope, where: str, needed: frozenset[str]) -> JSONResponse | None:
        """None if the request's token has one of `needed`, else the refusal to send.

        Messages name the route's template, not the path the client sent (except for a
        route missing from the table: its path, clipped).
        """
        presented = bearer_token(scope)
        roles = None if presented is None else self.store.roles_of(presented)
        if roles is not None and roles & needed:
            return None
        challenge = f'Bearer realm="{REALM}"'
        exc: GatewayError
        if presented is None:
            reason = "missing_token"
            exc = Unauthorized(
                f"{where} needs a bearer token: send the header 'Authorization: Bearer <token>'",
                field="Authorization",
            )
        elif roles is None:
            reason, challenge = "invalid_token", challenge + ', error="invalid_token"'
            exc = Unauthorized("the bearer token is not valid", field="Authorization")
        else:
            reason = "wrong_role"
            challenge += f', error="insufficient_scope", scope="{" ".join(sorted(needed))}"'
            exc = Forbidden(
                f"{where} needs the role {' or '.join(sorted(needed))}; this token has "
                f"{', '.join(sorted(roles))}",
                field="Authorization",
            )
        gateway = getattr(scope["app"].state, "gateway", None)
        if gateway is not None:
            gateway.metrics.count_auth_failure(reason)
        # The v2 protocol's routes answer errors in its own form, as server/kserve.py does.
        path = route_path(scope)
        v2 = path == "/v2" or path.startswith("/v2/")
        response = v2_error(exc) if v2 else error_response(exc)
        response.headers["WWW-Authenticate"] = challenge
        return response


def bearer_token(scope: Scope) -> bytes | None:
    """The token of the request's ``Authorization: Bearer <token>`` header, else None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                return token
            return None
    return None
