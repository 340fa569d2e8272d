"""Access control on a real gateway: bearer tokens from a file and from the environment,
roles per route (server/auth.py ROUTE_ROLES), 401/403 answers, the failure counter, open
probes, and the warning for a public bind without tokens."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount, Route

from server.app import create_app
from server.auth import MIN_TOKEN_CHARS, ROUTE_ROLES, AuthSetupError, is_loopback, rule_for
from server.config import GatewayConfigError, parse_gateway_config
from server.kserve import build_router
from tests.gateway_fixtures import REPO, LiveServer, tiny_config

OPS_ENV = "MLWS_TEST_OPERATIONS_TOKEN"
TINY_V2 = {
    "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]
}
#: (method, path, JSON body) of every inference route, as the inference role calls them.
INFERENCE_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/infer", {"model": "tiny", "class": "interactive", "batch_size": 1}),
    ("GET", "/v1/models", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/tiny", None),
    ("GET", "/v2/models/tiny/ready", None),
    ("GET", "/v2/models/tiny/versions/1", None),
    ("POST", "/v2/models/tiny/infer", TINY_V2),
]
OPERATIONS_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/stats", None),
    ("GET", "/v1/lanes", None),
    ("GET", "/v1/profile", None),
    ("GET", "/v1/predictor", None),
    ("GET", "/metrics", None),
]
OPEN_PATHS = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/openapi.json"]


class Tokens:
    """Fresh tokens: inference from a file, operations from an env var, metrics from a file."""

    def __init__(self, folder: Path) -> None:
        self.inference = secrets.token_urlsafe(32)
        self.operations = secrets.token_urlsafe(32)
        self.metrics = secrets.token_urlsafe(32)
        self.inference_file = folder / "inference.token"
        self.inference_file.write_text(self.inference + "\n")  # as `echo token > file` leaves it
        self.metrics_file = folder / "metrics.token"
        self.metrics_file.write_text(self.metrics)

    def auth(self, **extra: Any) -> dict[str, Any]:
        return {
            "tokens": [
                {"name": "app", "roles": ["inference"], "file": str(self.inference_file)},
                {"name": "ops", "roles": ["operations"], "env": OPS_ENV},
                {"name": "scraper", "roles": ["metrics"], "file": str(self.metrics_file)},
            ],
            **extra,
        }


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return Tokens(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def server(onnx_dir: Path, tokens: Tokens) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(OPS_ENV, tokens.operations)
        config = tiny_config(onnx_dir, auth=tokens.auth())
        with LiveServer(config) as live:
            yield live


def call(live: LiveServer, method: str, path: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, f"{live.base_url}{path}", json=body, headers=headers, timeout=60)


def failures(live: LiveServer, token: str) -> dict[str, float]:
    """mlws_auth_failures_total by reason, read through /metrics with `token`."""
    text = call(live, "GET", "/metrics", None, token).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "mlws_auth_failures"]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_each_role_reaches_its_routes(server: LiveServer, tokens: Tokens) -> None:
    for method, path, body in INFERENCE_CALLS:
        r = call(server, method, path, body, tokens.inference)
        assert r.status_code == 200, (path, r.text)
    for method, path, body in OPERATIONS_CALLS:
        r = call(server, method, path, body, tokens.operations)
        assert r.status_code == 200, (path, r.text)
    assert call(server, "GET", "/metrics", None, tokens.metrics).status_code == 200


@pytest.mark.parametrize(
    ("token_of", "calls"),
    [
        ("inference", OPERATIONS_CALLS),
        ("operations", INFERENCE_CALLS),
        ("metrics", INFERENCE_CALLS + OPERATIONS_CALLS[:-1]),
    ],
)
def test_a_role_is_refused_the_others_routes(
    server: LiveServer, tokens: Tokens, token_of: str, calls: list[tuple[str, str, Any]]
) -> None:
    before = failures(server, tokens.operations)
    for method, path, body in calls:
        r = call(server, method, path, body, getattr(tokens, token_of))
        assert r.status_code == 403, (path, r.text)
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and 'error="insufficient_scope"' in challenge
        detail = r.json()["error"] if path.startswith("/v2") else r.json()["detail"]
        assert "needs the role" in detail and token_of in detail, detail
        if not path.startswith("/v2"):
            assert r.json()["error"] == "forbidden"
    after = failures(server, tokens.operations)
    assert after["wrong_role"] - before["wrong_role"] == len(calls)
    assert after["missing_token"] == before["missing_token"]


def test_a_refusal_names_the_route_not_the_path_sent(server: LiveServer, tokens: Tokens) -> None:
    r = call(server, "GET", "/stats", None, tokens.inference)
    assert r.json()["detail"] == "GET /stats needs the role operations; this token has inference"
    long_name = "m" * 5000
    r = call(server, "GET", f"/v2/models/{long_name}", None, tokens.operations)
    assert r.status_code == 403
    assert r.json() == {
        "error": "GET /v2/models/{name} needs the role inference; this token has operations"
    }


def test_no_token_is_401_with_a_bearer_challenge(server: LiveServer, tokens: Tokens) -> None:
    before = failures(server, tokens.operations)
    for method, path, body in INFERENCE_CALLS + OPERATIONS_CALLS:
        r = call(server, method, path, body, None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="mlws"'
        if path.startswith("/v2"):  # the protocol's own error form
            assert "Authorization: Bearer" in r.json()["error"]
        else:
            assert r.json()["error"] == "unauthorized"
            assert "Authorization: Bearer <token>" in r.json()["detail"]
            assert r.json()["field"] == "Authorization"
    after = failures(server, tokens.operations)
    calls = len(INFERENCE_CALLS + OPERATIONS_CALLS)
    assert after["missing_token"] - before["missing_token"] == calls


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer not-a-token-we-know-of", "invalid_token"),
        ("bearer wrong wrong", "invalid_token"),
        ("Bearer", "missing_token"),
        ("Basic dXNlcjpwYXNz", "missing_token"),
    ],
)
def test_a_bad_token_is_401(
    server: LiveServer, tokens: Tokens, authorization: str, reason: str
) -> None:
    before = failures(server, tokens.operations)
    body = {"model": "tiny", "class": "interactive", "batch_size": 1}
    headers = {"Authorization": authorization}
    r = httpx.post(f"{server.base_url}/infer", json=body, headers=headers, timeout=60)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="mlws"')
    after = failures(server, tokens.operations)
    assert after[reason] - before[reason] == 1
    if reason == "invalid_token":
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        assert r.json()["detail"] == "the bearer token is not valid"


def test_a_token_is_not_a_prefix_match(server: LiveServer, tokens: Tokens) -> None:
    for guess in (tokens.inference[:-1], tokens.inference + "x", tokens.inference.upper()):
        assert call(server, "GET", "/v1/models", None, guess).status_code == 401


def test_probes_and_the_schema_stay_open(server: LiveServer) -> None:
    for path in OPEN_PATHS:
        assert httpx.get(f"{server.base_url}{path}", timeout=30).status_code == 200, path


def test_unknown_paths_are_404_and_wrong_methods_need_a_token(server: LiveServer) -> None:
    assert httpx.get(f"{server.base_url}/nope", timeout=30).status_code == 404
    assert httpx.post(f"{server.base_url}/stats", timeout=30).status_code == 401


def app_route_templates(app: FastAPI) -> set[str]:
    """Every path template the app routes, as ROUTE_ROLES spells it (a mount's files
    below it as {path:path}; the /v2 routes from the router the app includes)."""
    templates = {
        f"{r.path}/{{path:path}}" if isinstance(r, Mount) else r.path
        for r in app.routes
        if isinstance(r, Route | Mount)
    }
    return templates | {r.path for r in build_router().routes if isinstance(r, Route)}


def test_every_route_has_a_role(server: LiveServer) -> None:
    """A new route must be given its role in ROUTE_ROLES (else only operations may call it)."""
    templates = app_route_templates(server.app)
    assert {"/infer", "/v2/models/{name}/infer", "/docs-static/{path:path}"} <= templates
    assert templates - set(ROUTE_ROLES) == set()
    assert {p for p, roles in ROUTE_ROLES.items() if not roles} == {
        "/healthz",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/docs-static/{path:path}",
    }


def test_a_path_gets_the_rule_of_the_route_that_answers_it() -> None:
    cases = {
        "/v2/health/live": "/v2/health/live",
        "/v2/models/tiny": "/v2/models/{name}",
        "/v2/models/tiny/infer": "/v2/models/{name}/infer",
        "/v2/models/tiny/versions/1/ready": "/v2/models/{name}/versions/{version}/ready",
        "/v2/repository/index": "/v2/repository/index",
        "/v2/repository/models/tiny/load": "/v2/repository/models/{name}/load",
        "/v2/systemsharedmemory/status": "/v2/{rest:path}",
        "/docs-static/swagger-ui.css": "/docs-static/{path:path}",
        "/stats": "/stats",
    }
    assert {path: getattr(rule_for(path), "template", None) for path in cases} == cases
    assert rule_for("/stats/") is None and rule_for("/nope") is None


def test_metrics_can_be_left_open(onnx_dir: Path, tokens: Tokens) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(OPS_ENV, tokens.operations)
        config = tiny_config(onnx_dir, auth=tokens.auth(metrics_open=True))
        with LiveServer(config) as live:
            assert httpx.get(f"{live.base_url}/metrics", timeout=30).status_code == 200
            assert httpx.get(f"{live.base_url}/stats", timeout=30).status_code == 401


# --- start-up: where tokens come from, and the public-bind warning -------------------------


def test_public_bind_without_tokens_warns(onnx_dir: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="mlws.server")
    with LiveServer(tiny_config(onnx_dir, host="0.0.0.0")) as live:
        body = {"model": "tiny", "class": "interactive", "batch_size": 1}
        assert httpx.post(f"{live.base_url}/infer", json=body, timeout=60).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.0.0" in w and "no access control" in w for w in warnings), warnings


def test_no_warning_on_loopback_or_with_tokens(
    onnx_dir: Path, tokens: Tokens, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setenv(OPS_ENV, tokens.operations)
    caplog.set_level(logging.WARNING, logger="mlws.server")
    create_app(tiny_config(onnx_dir))
    create_app(tiny_config(onnx_dir, host="0.0.0.0", auth=tokens.auth()))
    assert not [r for r in caplog.records if "no access control" in r.getMessage()]


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "gateway.example"]))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"file": "missing.token"}, ["auth.tokens.0.file", "missing.token"]),
        ({"env": "MLWS_TEST_UNSET_TOKEN"}, ["auth.tokens.0.env", "MLWS_TEST_UNSET_TOKEN"]),
        ({"file": "short.token"}, ["auth.tokens.0", f"at least {MIN_TOKEN_CHARS}"]),
    ],
)
def test_a_token_that_cannot_be_read_stops_the_start(
    onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: dict, words: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLWS_TEST_UNSET_TOKEN", raising=False)
    (tmp_path / "short.token").write_text("abc\n")
    auth = {"tokens": [{"name": "x", "roles": ["inference"], **entry}]}
    with pytest.raises(AuthSetupError) as info:
        create_app(tiny_config(onnx_dir, auth=auth))
    assert all(w in str(info.value) for w in words), info.value


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"token": "abc", "file": "x"}, ["auth.tokens.0.token", "never go in the config"]),
        ({"file": "x", "env": "X"}, ["auth.tokens.0.file", "exactly one"]),
        ({}, ["auth.tokens.0.file", "exactly one"]),
        ({"file": "x", "roles": ["admin"]}, ["auth.tokens.0.roles.0"]),
    ],
)
def test_config_refuses_inline_tokens_and_unclear_sources(entry: dict, words: list[str]) -> None:
    token = {"name": "x", "roles": ["inference"], **entry}
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_config({"auth": {"tokens": [token]}})
    assert all(w in str(info.value) for w in words), info.value


def test_mlws_serve_reports_an_unreadable_token_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    entry = {"name": "app", "roles": ["inference"], "file": str(tmp_path / "absent.token")}
    config.write_text(yaml.safe_dump({"models": [{"name": "tiny"}], "auth": {"tokens": [entry]}}))
    cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(config)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "auth.tokens.0.file: cannot read token file" in result.stderr
    assert "Traceback" not in result.stderr
