"""Locust load for the mlws gateway: interactive and batch users, SLO misses as failures.

Headless run (20 s, 4 users, against a gateway on 127.0.0.1:8000), then the
project's summary.json from its CSVs::

    locust -f loadgen/locustfile.py --headless -u 4 -r 4 -t 20s \\
        --host http://127.0.0.1:8000 --csv results/locust/run \\
        --json-file results/locust/run
    python -m loadgen.locust_report --csv-prefix results/locust/run --out results/locust

Locust appends ``.json`` to the --json-file name: ``--json-file results/locust/run``
writes ``run.json``, which the converter finds beside the CSVs (``--json-file
results/locust/run.json`` would write ``run.json.json``; ``--json`` accepts
either name). Add ``MLWS_MODEL=tiny`` (or ``--mlws-model tiny``) for a quick
run against a gateway serving the tiny test model.

Two user classes post to POST /infer with synthetic inputs (`batch_size`), so
a request is a few hundred bytes whatever the model:

- `InteractiveUser`: class "interactive", `--interactive-batch` samples (1).
- `BatchUser`: class "batch", a uniform size in [`--batch-min`, `--batch-max`].

Requests are named by class (``/infer [interactive]``, ``/infer [batch]``), so
Locust's tables and CSVs have one row per class. A 200 whose ``slo_met`` is
false is a failure "SLO missed: e2e X ms > Y ms" (the gateway's own e2e and
budget, whole milliseconds), so Locust's failure counts are SLO misses plus
errors; a 429/503 (or any non-200) fails with its status, code and reason,
"HTTP 429 queue_full: ...". Locust's response times are the client's view
(HTTP included); the SLO verdict is the gateway's.

Every knob is a Locust argument with an environment variable of the same
meaning (the argument wins): ``--mlws-model`` MLWS_MODEL (resnet18),
``--mlws-backend`` MLWS_BACKEND (the gateway's default), ``--interactive-weight``
MLWS_INTERACTIVE_WEIGHT (3), ``--batch-weight`` MLWS_BATCH_WEIGHT (1),
``--interactive-batch`` MLWS_INTERACTIVE_BATCH (1), ``--batch-min``
MLWS_BATCH_MIN (4), ``--batch-max`` MLWS_BATCH_MAX (16), ``--wait-min`` /
``--wait-max`` MLWS_WAIT_MIN / MLWS_WAIT_MAX (think time, s: 0.05 / 0.5),
``--mlws-rate`` MLWS_RATE (jobs/s per user; 0: think time instead),
``--mlws-arrivals`` MLWS_ARRIVALS (poisson or uniform gaps at that rate),
``--interactive-slo-ms`` / ``--batch-slo-ms`` MLWS_INTERACTIVE_SLO_MS /
MLWS_BATCH_SLO_MS (the request's `slo_ms`; 0: the gateway's class default), and
``--mlws-token-file`` MLWS_TOKEN_FILE (a file holding a bearer token with the
inference role, for a gateway with access control; sent as ``Authorization: Bearer``).

Open loop, approximately. Plain Locust is closed loop: a user waits for its
answer, so a slow gateway slows its own load. With ``--mlws-rate R`` each user
follows a fixed arrival schedule instead (gaps exponential or 1/R): the wait
before a send is the time until its scheduled instant, and a user that fell
behind (its last answer came late) sends at once until it has caught up. So
the offered load is users × R jobs/s whatever the latency, as long as answers
mostly come back within 1/R: a user has one request outstanding at a time,
and a run whose latency exceeds that turns closed loop again. Choose ``-u`` ≥
(total jobs/s) × (worst latency) to stay open. A user more than `MAX_LAG_S`
behind drops the missed arrivals (logged at the end) instead of bursting them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from typing import Any

from locust import HttpUser, events, task
from locust.env import Environment

log = logging.getLogger("mlws.locust")

#: How far behind its schedule a paced user may fall before it drops arrivals.
MAX_LAG_S = 2.0
#: (option, environment variable, type, default, help)
OPTIONS: tuple[tuple[str, str, type, Any, str], ...] = (
    ("--mlws-model", "MLWS_MODEL", str, "resnet18", "model to request"),
    ("--mlws-backend", "MLWS_BACKEND", str, "", "backend (empty: the gateway's default)"),
    ("--interactive-weight", "MLWS_INTERACTIVE_WEIGHT", int, 3, "InteractiveUser weight"),
    ("--batch-weight", "MLWS_BATCH_WEIGHT", int, 1, "BatchUser weight"),
    ("--interactive-batch", "MLWS_INTERACTIVE_BATCH", int, 1, "samples per interactive job"),
    ("--batch-min", "MLWS_BATCH_MIN", int, 4, "fewest samples per batch job"),
    ("--batch-max", "MLWS_BATCH_MAX", int, 16, "most samples per batch job"),
    ("--wait-min", "MLWS_WAIT_MIN", float, 0.05, "shortest think time, s (closed loop)"),
    ("--wait-max", "MLWS_WAIT_MAX", float, 0.5, "longest think time, s (closed loop)"),
    ("--mlws-rate", "MLWS_RATE", float, 0.0, "jobs/s per user on a schedule; 0: think time"),
    ("--mlws-arrivals", "MLWS_ARRIVALS", str, "poisson", "poisson or uniform gaps at the rate"),
    ("--interactive-slo-ms", "MLWS_INTERACTIVE_SLO_MS", float, 0.0, "0: the class default"),
    ("--batch-slo-ms", "MLWS_BATCH_SLO_MS", float, 0.0, "0: the class default"),
    ("--mlws-token-file", "MLWS_TOKEN_FILE", str, "", "bearer token file; empty: no token"),
)
#: Arrivals each user class dropped for lagging, this run. Module state because
#: Locust's users share the process and nothing else outlives them; reset per test.
DROPPED: Counter[str] = Counter()


def _env(var: str, kind: type, default: Any) -> Any:
    raw = os.environ.get(var, "")
    return kind(raw) if raw.strip() else default


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    for flag, var, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, env_var=var, default=default, help=f"{text} ({var})")


def setting(environment: Environment, flag: str) -> Any:
    """An option's value: the parsed argument, else its environment variable, else default."""
    for name, var, kind, default, _ in OPTIONS:
        if name == flag:
            parsed = environment.parsed_options
            key = flag.lstrip("-").replace("-", "_")
            if parsed is not None and hasattr(parsed, key):
                return getattr(parsed, key)
            return _env(var, kind, default)
    raise KeyError(flag)


@events.init.add_listener
def _apply_weights(environment: Environment, **_: Any) -> None:
    # Weights are class attributes read when users spawn, after init: set them here
    # so a command-line weight wins over the environment one read at import.
    InteractiveUser.weight = setting(environment, "--interactive-weight")
    BatchUser.weight = setting(environment, "--batch-weight")
    low, high = setting(environment, "--batch-min"), setting(environment, "--batch-max")
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= --batch-min ({low}) <= --batch-max ({high})")
    if setting(environment, "--mlws-arrivals") not in ("poisson", "uniform"):
        raise ValueError("--mlws-arrivals must be 'poisson' or 'uniform'")


@events.test_start.add_listener
def _reset_dropped(**_: Any) -> None:
    DROPPED.clear()


@events.test_stop.add_listener
def _report_dropped(**_: Any) -> None:
    for name, count in sorted(DROPPED.items()):
        log.warning(
            "%s dropped %d scheduled arrivals (more than %g s behind)", name, count, MAX_LAG_S
        )


class Schedule:
    """A user's arrival instants at `rate` per second: the open-loop approximation."""

    def __init__(self, rate: float, poisson: bool, rng: random.Random) -> None:
        self.rate, self.poisson, self.rng = rate, poisson, rng
        self.next_at: float | None = None

    def wait(self, now: float) -> tuple[float, int]:
        """(seconds until the next send, arrivals dropped for lagging) at `now`."""
        self.next_at = (now if self.next_at is None else self.next_at) + self._gap()
        dropped = 0
        while self.next_at < now - MAX_LAG_S:  # far behind: skip, don't burst
            self.next_at += self._gap()
            dropped += 1
        return max(0.0, self.next_at - now), dropped

    def _gap(self) -> float:
        return self.rng.expovariate(self.rate) if self.poisson else 1.0 / self.rate


class GatewayUser(HttpUser):
    """One client of POST /infer; subclasses choose the class and the batch size."""

    abstract = True
    job_class = "interactive"

    def on_start(self) -> None:
        env = self.environment
        self.model = setting(env, "--mlws-model")
        self.backend = setting(env, "--mlws-backend")
        self.rng = random.Random()
        rate = setting(env, "--mlws-rate")
        poisson = setting(env, "--mlws-arrivals") == "poisson"
        self.schedule = Schedule(rate, poisson, self.rng) if rate > 0 else None
        self.think = (setting(env, "--wait-min"), setting(env, "--wait-max"))
        self.slo_ms = setting(env, f"--{self.job_class}-slo-ms")
        token_file = setting(env, "--mlws-token-file")
        if token_file:
            with open(token_file, encoding="utf-8") as f:
                self.client.headers["Authorization"] = f"Bearer {f.read().strip()}"

    def wait_time(self) -> float:
        """Until the next scheduled arrival (--mlws-rate), else a uniform think time."""
        if self.schedule is None:
            return self.rng.uniform(*self.think)
        wait, dropped = self.schedule.wait(time.monotonic())
        if dropped:
            DROPPED[type(self).__name__] += dropped
        return wait

    def samples(self) -> int:
        """Samples in the next job."""
        raise NotImplementedError

    @task
    def infer(self) -> None:
        """One synthetic job; SLO misses and non-200 answers are failures with a reason."""
        body: dict[str, Any] = {
            "model": self.model,
            "class": self.job_class,
            "batch_size": self.samples(),
            "top_k": 1,  # keeps responses small: the load is the model, not JSON
        }
        if self.backend:
            body["backend"] = self.backend
        if self.slo_ms > 0:
            body["slo_ms"] = self.slo_ms
        name = f"/infer [{self.job_class}]"
        with self.client.post("/infer", json=body, name=name, catch_response=True) as resp:
            text = resp.text if resp.status_code else str(resp.error or "no response")
            verdict = judge(resp.status_code, text or "")
            if verdict is None:
                resp.success()
            else:
                resp.failure(verdict)


def judge(status: int, text: str) -> str | None:
    """None for an answer that met its SLO, else the failure message Locust records."""
    try:
        data = json_object(text)
    except ValueError:
        data = {}
    if status == 200:
        if not data:
            return "HTTP 200 bad_response: body is not a JSON object"
        if data.get("slo_met") is False:
            e2e = data.get("timing", {}).get("e2e_ms", float("nan"))
            slo = data.get("slo_ms", float("nan"))
            # Whole milliseconds: Locust keeps one failure row per distinct message.
            return f"SLO missed: e2e {e2e:.0f} ms > {slo:.0f} ms"
        return None
    if status == 0:
        return f"HTTP 0 connection_error: {text}"[:200]
    code, detail = data.get("error", "http_error"), data.get("detail", text)
    return f"HTTP {status} {code}: {detail}"[:200]


def json_object(text: str) -> dict[str, Any]:
    """`text` as a JSON object; ValueError if it is not one."""
    data = json.loads(text) if text else None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


class InteractiveUser(GatewayUser):
    """Latency-bound clients: small jobs, class interactive (100 ms SLO by default)."""

    weight = _env("MLWS_INTERACTIVE_WEIGHT", int, 3)
    job_class = "interactive"

    def samples(self) -> int:
        return int(setting(self.environment, "--interactive-batch"))


class BatchUser(GatewayUser):
    """Throughput clients: larger jobs, class batch (1000 ms SLO by default)."""

    weight = _env("MLWS_BATCH_WEIGHT", int, 1)
    job_class = "batch"

    def samples(self) -> int:
        low, high = (
            setting(self.environment, "--batch-min"),
            setting(self.environment, "--batch-max"),
        )
        return self.rng.randint(low, high)
