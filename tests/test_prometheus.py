"""Prometheus configuration and rules, checked by the real promtool and a real Prometheus.

promtool checks dashboards/prometheus/{prometheus,rules}.yml and runs the alert unit tests
(rules_test.yml). Then a real Prometheus scrapes a real gateway (the tiny model, with
access control: Prometheus sends a metrics-only bearer token, as in compose) every
second while the test sends both classes of traffic and some bad requests, and every PromQL
expression of the Grafana dashboard and of rules.yml is evaluated through /api/v1/query:
each must parse and return data. Alerts are normally quiet, so an alert expression must
parse and the operands it compares must return data.

Prometheus comes from Debian's `prometheus` package: scripts/install-system-deps.sh
installs it when missing. Without it and without root the tests skip, except in CI
(CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway_fixtures import LiveServer, free_port, tiny_config

REPO = Path(__file__).resolve().parent.parent
PROM_DIR = REPO / "dashboards" / "prometheus"
DASHBOARD_JSON = REPO / "dashboards" / "grafana" / "dashboards" / "mlws.json"
INSTALL = REPO / "scripts" / "install-system-deps.sh"
#: Grafana's macros, as Grafana would expand them for a short range at a 1 s scrape.
MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
#: First scrape ~5-6 s after start, then recording rules over recorded series: poll this long.
DATA_TIMEOUT_S = 40.0


# --- promtool and prometheus ----------------------------------------------------------------


def find_tools() -> dict[str, str] | None:
    tools = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    return tools if all(tools.values()) else None  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """Paths of `prometheus` and `promtool`, installed by the system-deps script if needed."""
    found = find_tools()
    if found:
        return found
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if os.geteuid() != 0 and not in_ci:
        pytest.skip(
            "prometheus/promtool are not installed and this is not root: "
            f"run `sudo {INSTALL.relative_to(REPO)}` (Debian package prometheus)"
        )
    result = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, timeout=600, check=False
    )
    found = find_tools()
    if not found:
        pytest.fail(
            f"{INSTALL.name} did not install prometheus/promtool (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return found


def promtool(tools: dict[str, str], *args: str | Path, stdin: str | None = None) -> str:
    result = subprocess.run(
        [tools["promtool"], *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        cwd=PROM_DIR,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_system_deps_script_is_idempotent(tools: dict[str, str]) -> None:
    """With both tools present the script does nothing and succeeds (no apt-get call)."""
    result = subprocess.run(
        ["bash", "-x", str(INSTALL)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "apt-get" not in result.stderr


def test_promtool_check_config(tools: dict[str, str], tmp_path: Path) -> None:
    # promtool checks that the token file exists: the compose secret is only in a container.
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    token = tmp_path / "metrics.token"
    token.write_text(secrets.token_urlsafe(32))
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(token)
    config["rule_files"] = [str(PROM_DIR / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = promtool(tools, "check", "config", tmp_path / "prometheus.yml")
    assert "SUCCESS" in out and "rules.yml" in out


def test_promtool_check_rules(tools: dict[str, str]) -> None:
    out = promtool(tools, "check", "rules", PROM_DIR / "rules.yml")
    assert re.search(r"SUCCESS: \d+ rules found", out), out


def test_promtool_alert_unit_tests(tools: dict[str, str]) -> None:
    out = promtool(tools, "test", "rules", PROM_DIR / "rules_test.yml")
    assert "SUCCESS" in out


def test_compose_config_scrapes_the_gateway_every_5s() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mlws"
    assert job["static_configs"] == [{"targets": ["gateway:8000"]}]
    assert config["global"]["scrape_interval"] == "5s"
    # The gateway's /metrics wants a token: the compose secret (tests/test_docker.py).
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/run/secrets/mlws_metrics_token",
    }


def rule_exprs() -> list[tuple[str, str, str]]:
    """(kind, name, expr) of every rule in rules.yml."""
    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    return [
        ("alert" if "alert" in r else "record", r.get("alert") or r["record"], r["expr"].strip())
        for group in rules["groups"]
        for r in group["rules"]
    ]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title/refId, expr with Grafana's macros expanded) of every dashboard query."""
    dashboard = json.loads(DASHBOARD_JSON.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            assert "$" not in expr, f"unexpanded macro in {expr!r}"
            out.append((f"{panel['title']} / {target['refId']}", expr))
    return out


# --- splitting an alert expression into the operands it compares ----------------------------

_SET_OPS = re.compile(r"\b(and|or|unless)\b")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*bool\b)?")


def _top_level_spans(expr: str) -> list[bool]:
    """For each character: whether it is outside (), {}, [] and quotes."""
    depth, quote, out = 0, "", []
    for i, ch in enumerate(expr):
        if quote:
            out.append(False)
            if ch == quote and expr[i - 1] != "\\":
                quote = ""
            continue
        if ch in "\"'`":
            quote = ch
            out.append(False)
            continue
        if ch in "([{":
            depth += 1
        out.append(depth == 0 and ch not in ")]}")
        if ch in ")]}":
            depth -= 1
    return out


def _split_top(expr: str, pattern: re.Pattern[str]) -> list[str]:
    top = _top_level_spans(expr)
    parts, start = [], 0
    for m in pattern.finditer(expr):
        if all(top[m.start() : m.end()]):
            parts.append(expr[start : m.start()])
            start = m.end()
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def compared_operands(expr: str) -> list[str]:
    """The left-hand operands of each top-level comparison (`x > 0.9 and y > 1` → [x, y])."""
    operands = []
    for part in _split_top(expr, _SET_OPS):
        sides = _split_top(part, _COMPARISON)
        operands.append(sides[0])
    return operands


def test_compared_operands() -> None:
    expr = 'a:b{x=~"1|2"} > (14.4 * (1 - 0.99))\nand sum by (c) (rate(m{o!="x"}[5m])) >= 2'
    assert compared_operands(expr) == ['a:b{x=~"1|2"}', 'sum by (c) (rate(m{o!="x"}[5m]))']
    assert compared_operands('up{job="mlws"} == 0') == ['up{job="mlws"}']
    assert compared_operands("x / y > bool 0.5") == ["x / y"]


# --- a real gateway, a real Prometheus ------------------------------------------------------


class Traffic:
    """Both classes and some bad requests against the gateway until stopped (bounded)."""

    def __init__(self, base_url: str, token: str, workers: int = 3, max_s: float = 90.0) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.stop = threading.Event()
        self.max_s = max_s
        self.counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)
        ]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _send(self, client: httpx.Client, n: int) -> int:
        if n % 10 == 9:  # unknown model: 404, counted as outcome="invalid"
            body = {"model": "nope", "class": "batch", "batch_size": 1}
            return client.post("/infer", json=body).status_code
        if n % 10 == 4:  # malformed JSON: 400
            r = client.post("/infer", content=b"{", headers={"content-type": "application/json"})
            return r.status_code
        body: dict[str, Any] = {"model": "tiny", "class": "interactive", "batch_size": 1}
        if n % 2:
            body = {"model": "tiny", "class": "batch", "batch_size": 16}
        return client.post("/infer", json=body).status_code

    def _run(self, worker: int) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(base_url=self.base_url, timeout=30, headers=self.headers) as client:
            n = worker
            while not self.stop.is_set() and time.monotonic() < deadline:
                status = self._send(client, n)
                with self._lock:
                    self.counts[status] = self.counts.get(status, 0) + 1
                n += 1
                # Pace the load: the two cores also run Prometheus and this test.
                self.stop.wait(0.01)


class PrometheusProcess:
    """`prometheus` scraping one target every second with the repository's rules, sending
    the token in `token_file`."""

    def __init__(self, binary: str, target: str, workdir: Path, token_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(PROM_DIR / "rules.yml")]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"][0]["authorization"]["credentials_file"] = str(token_file)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> PrometheusProcess:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError(f"prometheus not ready: {self.log()}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def query(self, expr: str) -> dict[str, Any]:
        """/api/v1/query's JSON (status "error" with the message on a parse error)."""
        r = httpx.post(f"{self.url}/api/v1/query", data={"query": expr}, timeout=10)
        return r.json()


@pytest.fixture(scope="module")
def stack(
    tools: dict[str, str], onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, PrometheusProcess, Traffic]]:
    """A gateway with access control under traffic, and a Prometheus scraping it every
    second with a metrics-only token, as docker-compose.yml runs them."""
    workdir = tmp_path_factory.mktemp("prometheus")
    tokens = {role: secrets.token_urlsafe(32) for role in ("inference", "metrics")}
    for role, token in tokens.items():
        (workdir / f"{role}.token").write_text(token)
    auth = {
        "tokens": [
            {"name": role, "roles": [role], "file": str(workdir / f"{role}.token")}
            for role in tokens
        ]
    }
    with (
        LiveServer(tiny_config(onnx_dir, auth=auth)) as gateway,
        PrometheusProcess(
            tools["prometheus"], f"127.0.0.1:{gateway.port}", workdir, workdir / "metrics.token"
        ) as prom,
        Traffic(gateway.base_url, tokens["inference"]) as traffic,
    ):
        yield gateway, prom, traffic


def poll_until_all_answer(
    prom: PrometheusProcess, exprs: dict[str, str], timeout_s: float = DATA_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """Query every expression until each returns data (or the deadline); the last answers."""
    deadline = time.monotonic() + timeout_s
    answers: dict[str, dict[str, Any]] = {}
    pending = dict(exprs)
    while pending:
        for key, expr in list(pending.items()):
            answer = answers[key] = prom.query(expr)
            # Done when it has data, or on a parse error (waiting will not fix that).
            if answer["status"] != "success" or answer["data"]["result"]:
                pending.pop(key)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return answers


def failures(answers: dict[str, dict[str, Any]], exprs: dict[str, str]) -> list[str]:
    out = []
    for key, answer in answers.items():
        if answer["status"] != "success":
            out.append(f"{key}: {answer.get('error')} in {exprs[key]!r}")
        elif not answer["data"]["result"]:
            out.append(f"{key}: no data for {exprs[key]!r}")
    return out


def test_every_dashboard_and_rule_expression_returns_data(
    stack: tuple[LiveServer, PrometheusProcess, Traffic],
) -> None:
    _, prom, traffic = stack
    data_exprs = {f"dashboard {k}": e for k, e in dashboard_exprs()}
    parse_only: dict[str, str] = {}
    for kind, name, expr in rule_exprs():
        if kind == "record":
            data_exprs[f"record {name}"] = expr
            data_exprs[f"recorded series {name}"] = name  # the rule ran and wrote it
        else:
            parse_only[f"alert {name}"] = expr
            for i, operand in enumerate(compared_operands(expr)):
                data_exprs[f"alert {name} operand {i}"] = operand

    answers = poll_until_all_answer(prom, data_exprs)
    problems = failures(answers, data_exprs)
    for key, expr in parse_only.items():
        answer = prom.query(expr)
        if answer["status"] != "success":
            problems.append(f"{key}: {answer.get('error')} in {expr!r}")
    assert not problems, (
        "\n".join(problems) + f"\ntraffic: {traffic.counts}\nprometheus log:\n{prom.log()}"
    )
    # The traffic was what the queries describe: both classes ok, some client errors.
    assert traffic.counts.get(200, 0) > 20 and traffic.counts.get(404, 0) > 0, traffic.counts


def test_admission_series_count_the_traffic(
    stack: tuple[LiveServer, PrometheusProcess, Traffic],
) -> None:
    """The Admission row reads real observations, not only the series the gateway creates at
    zero: ok traffic within its SLO shows as goodput and in the completion-ratio histogram
    (whose quantiles come back NaN, which passes as data above, until something is in it)."""
    _, prom, traffic = stack
    exprs = {
        "goodput": "sum(mlws_goodput_total) > 0",
        "completion ratio": "sum(mlws_completion_ratio_count) > 0",
    }
    problems = failures(poll_until_all_answer(prom, exprs), exprs)
    assert not problems, "\n".join(problems) + f"\ntraffic: {traffic.counts}"


def test_rules_evaluate_without_errors_and_alerts_stay_quiet(
    stack: tuple[LiveServer, PrometheusProcess, Traffic],
) -> None:
    """Prometheus loaded every rule of rules.yml, each has evaluated cleanly, and a healthy
    gateway under light load fires no alert."""
    _, prom, _ = stack
    expected = {name for _, name, _ in rule_exprs()}
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        health = {(r["name"], r["health"], r.get("lastError", "")) for r in rules}
        if all(h == "ok" for _, h, _ in health) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in rules} == expected
    assert all(h == "ok" and not err for _, h, err in health), health
    firing = [r for r in rules if r["type"] == "alerting" and r["state"] == "firing"]
    assert firing == []


def test_gateway_metrics_pass_promtool_lint(
    tools: dict[str, str], stack: tuple[LiveServer, PrometheusProcess, Traffic]
) -> None:
    gateway, _, _ = stack
    (scraper,) = [t for t in gateway.config.auth.tokens if "metrics" in t.roles]
    headers = {"Authorization": f"Bearer {Path(str(scraper.file)).read_text()}"}
    r = httpx.get(f"{gateway.base_url}/metrics", timeout=10, headers=headers)
    assert r.status_code == 200, r.text
    text = r.text
    promtool(tools, "check", "metrics", stdin=text)
