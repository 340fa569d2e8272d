"""A changed config file applied without a restart, against `mlws serve --config FILE` in
a child process: POST /v1/config/reload and SIGHUP, each under a stream of requests
(every one counted: sent = answered), models added, removed and replaced (a new ONNX
file, and a file rewritten in place); a bad file and a failed load leave the old
versions serving and say why; a change to anything but `models` is refused naming it.

The tests share one gateway; each first reloads the models it starts from, so none relies
on another having run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from onnx import helper, numpy_helper

from tests.gateway_fixtures import LiveServer, SubprocessServer, parse_gateway_config
from tests.onnx_models import save_model, write_mlp, write_unloadable

#: Batch work with a generous budget: admission never refuses a request for lateness.
BATCH = {"class": "batch", "slo_ms": 60000}
#: The output of a ones input through write_mlp's all-ones MLP, and through the twos one.
ONES, TWOS = 144.0, 576.0


def write_mlp_of(path: Path, value: float) -> Path:
    """write_mlp's graph with every weight and bias `value`."""

    def w(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(np.full(shape, value, dtype=np.float32), name)

    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    return save_model(
        path, nodes, ["N", 8], ["N", 4], [w("w1", 8, 16), w("b1", 16), w("w2", 16, 4)]
    )


class Files:
    """The model files and the gateway's config file, rewritten by each test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ones = write_mlp(root / "ones.onnx")
        self.twos = write_mlp_of(root / "twos.onnx", 2.0)
        self.mine = write_mlp(root / "mine.onnx")  # rewritten in place by a test
        self.bad = write_unloadable(root / "bad.onnx")
        self.config = root / "gateway.yaml"

    def write(self, models: dict[str, Path], **keys: Any) -> None:
        data = {
            "models": [{"name": n, "onnx_file": str(p)} for n, p in models.items()],
            "lanes": {"count": 2, "kind": "thread", "threads_per_lane": 1},
            "onnx_dir": str(self.root / "onnx"),
            "drain_timeout_s": 5,
            **keys,
        }
        self.config.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("reload"))


@pytest.fixture(scope="module")
def gateway(files: Files) -> Iterator[SubprocessServer]:
    files.write({"mlp": files.ones, "old": files.ones})
    with SubprocessServer(files.config) as live:
        yield live


def infer(base_url: str, name: str, client: httpx.Client | None = None) -> httpx.Response:
    body = {
        "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [1.0] * 8}],
        "parameters": BATCH,
    }
    post = client.post if client is not None else httpx.post
    return post(f"{base_url}/v2/models/{name}/infer", json=body, timeout=120)


def output(r: httpx.Response) -> float:
    assert r.status_code == 200, r.text
    return output_of(r.text)


def output_of(body: str) -> float:
    """The one value of a ones input's output (every output element is the same)."""
    values = set(json.loads(body)["outputs"][0]["data"])
    assert len(values) == 1, values
    return float(values.pop())


class Traffic:
    """Closed-loop senders over `models` in turn; every request sent is counted, and
    every answer (or the exception instead of one) recorded with when it was sent."""

    def __init__(self, base_url: str, models: list[str], senders: int = 3) -> None:
        self.base_url, self.models = base_url, models
        self.sent = 0
        self.answers: list[tuple[float, str, int, str]] = []  # (sent at, model, status, body)
        self.dropped: list[str] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,)) for i in range(senders)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)

    def _send(self, offset: int) -> None:
        k = offset % len(self.models)
        names = cycle(self.models[k:] + self.models[:k])
        with httpx.Client() as client:
            while not self._stop.is_set():
                name = next(names)
                with self._lock:
                    self.sent += 1
                at = time.monotonic()
                try:
                    r = infer(self.base_url, name, client)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.dropped.append(f"{name}: {exc!r}")
                    continue
                with self._lock:
                    self.answers.append((at, name, r.status_code, r.text))

    def wait_for(self, count: int, timeout_s: float = 120) -> None:
        """Until `count` more answers have come."""
        target = len(self.answers) + count
        deadline = time.monotonic() + timeout_s
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.answers) >= target, f"{len(self.answers)} answers, wanted {target}"

    def of(self, name: str, after: float = 0.0) -> list[tuple[int, str]]:
        return [(s, b) for at, n, s, b in self.answers if n == name and at > after]

    def check_all_answered(self) -> None:
        assert not self.dropped, self.dropped
        assert self.sent == len(self.answers), (self.sent, len(self.answers))


def reload(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/config/reload", timeout=300)


def ready(base_url: str, name: str) -> int:
    return httpx.get(f"{base_url}/v2/models/{name}/ready", timeout=10).status_code


def index(base_url: str) -> dict[str, dict[str, str]]:
    entries = httpx.post(f"{base_url}/v2/repository/index", timeout=10).json()
    return {e["name"]: e for e in entries}


def start_from(gateway: SubprocessServer, files: Files, models: dict[str, Path]) -> None:
    """Reload the gateway to serve exactly `models` (each test's starting point)."""
    files.write(models)
    r = reload(gateway.base_url)
    assert r.status_code == 200, r.text


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_the_route_adds_removes_and_replaces_under_load(
    gateway: SubprocessServer, files: Files
) -> None:
    url = gateway.base_url
    start_from(gateway, files, {"mlp": files.ones, "old": files.ones})
    assert output(infer(url, "mlp")) == ONES
    files.write({"mlp": files.twos, "new": files.ones})  # mlp replaced, old gone, new added
    with Traffic(url, ["mlp", "old"]) as traffic:
        traffic.wait_for(20)
        r = reload(url)
        done = time.monotonic()
        traffic.wait_for(30)  # some sent after the reload answered, to each model
    traffic.check_all_answered()
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["added"], report["removed"], report["replaced"]) == (["new"], ["old"], ["mlp"])
    assert report["failed"] == {} and report["file"] == str(files.config)
    # The replaced model never refused a request; after the reload only its new version serves.
    assert {s for s, _ in traffic.of("mlp")} == {200}, [b for s, b in traffic.of("mlp") if s != 200]
    assert {output_of(b) for _, b in traffic.of("mlp")} <= {ONES, TWOS}
    assert {output_of(b) for _, b in traffic.of("mlp", after=done)} == {TWOS}
    for status, body in traffic.of("old"):  # served, or refused saying why
        assert status == 200 or (status == 503 and "unloading" in body) or status == 404, body
    assert all(s == 404 for s, _ in traffic.of("old", after=done))
    assert ready(url, "new") == 200 and output(infer(url, "new")) == ONES
    assert ready(url, "old") != 200 and infer(url, "old").status_code == 404
    assert index(url)["old"]["state"] == "UNAVAILABLE"


def test_sighup_applies_a_file_rewritten_in_place_under_load(
    gateway: SubprocessServer, files: Files
) -> None:
    url = gateway.base_url
    start_from(gateway, files, {"mlp": files.twos, "new": files.ones})
    write_mlp(files.mine)  # ones, whatever an earlier run left there
    files.write({"mlp": files.twos, "new": files.mine})
    assert reload(url).json()["replaced"] == ["new"]  # its onnx_file changed
    assert output(infer(url, "new")) == ONES
    write_mlp_of(files.mine, 2.0)  # the same path, new weights: SIGHUP replaces it
    files.write({"mlp": files.twos, "new": files.mine, "old": files.ones})
    logged = gateway.output().count("config reload")
    with Traffic(url, ["mlp", "new"]) as traffic:
        traffic.wait_for(20)
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until("the reload logged", lambda: gateway.output().count("config reload") > logged)
        traffic.wait_for(20)
    traffic.check_all_answered()
    assert {s for s, _ in traffic.of("mlp") + traffic.of("new")} == {200}
    line = gateway.output().split("config reload from")[-1].splitlines()[0]
    assert "added old" in line and "replaced new" in line and "FAILED" not in line, line
    assert ready(url, "old") == 200 and output(infer(url, "old")) == ONES
    assert output(infer(url, "new")) == TWOS
    assert gateway.proc.poll() is None


def test_a_failed_load_keeps_the_old_version_serving_and_says_why(
    gateway: SubprocessServer, files: Files
) -> None:
    url = gateway.base_url
    start_from(gateway, files, {"mlp": files.twos, "new": files.mine, "old": files.ones})
    files.write({"mlp": files.bad, "new": files.mine, "old": files.ones, "more": files.ones})
    r = reload(url)
    assert r.status_code == 400, r.text
    body = r.json()
    assert "mlp" in body["detail"] and "Frobnicate" in body["detail"]
    assert "Frobnicate" in body["report"]["failed"]["mlp"]
    assert body["report"]["added"] == ["more"]  # the other changes applied
    assert output(infer(url, "mlp")) == TWOS  # its old version
    entry = index(url)["mlp"]
    assert entry["state"] == "READY" and "Frobnicate" in entry["reason"]


def test_a_bad_file_changes_nothing(gateway: SubprocessServer, files: Files) -> None:
    url = gateway.base_url
    start_from(gateway, files, {"mlp": files.twos, "more": files.ones})
    files.config.write_text("models: [{name: mlp, colour: red}]\n")
    r = reload(url)
    assert r.status_code == 400 and "colour" in r.json()["detail"], r.text
    files.config.write_text("models: [oops\n")
    r = reload(url)
    assert r.status_code == 400 and str(files.config) in r.json()["detail"], r.text
    assert output(infer(url, "mlp")) == TWOS and output(infer(url, "more")) == ONES


def test_other_keys_are_refused_naming_them(gateway: SubprocessServer, files: Files) -> None:
    url = gateway.base_url
    start_from(gateway, files, {"mlp": files.twos, "more": files.ones})
    files.write({"mlp": files.ones}, drain_timeout_s=9, lanes={"count": 3})
    r = reload(url)
    assert r.status_code == 409 and r.json()["error"] == "conflict", r.text
    detail = r.json()["detail"]
    assert "drain_timeout_s" in detail and "lanes.count" in detail and "restart" in detail
    assert output(infer(url, "mlp")) == TWOS and ready(url, "more") == 200  # nothing changed
    # SIGHUP: the refusal goes to the log, and the gateway serves on.
    gateway.proc.send_signal(signal.SIGHUP)
    wait_until("the refusal logged", lambda: "config reload refused" in gateway.output())
    assert output(infer(url, "mlp")) == TWOS and gateway.proc.poll() is None


def test_the_command_line_reloads(gateway: SubprocessServer, files: Files) -> None:
    start_from(gateway, files, {"mlp": files.twos, "more": files.ones})
    files.write({"mlp": files.twos, "new": files.mine, "old": files.ones})
    cmd = [sys.executable, "-m", "mlws", "config", "reload", "--url", gateway.base_url]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = {tuple(line.split()) for line in run.stdout.splitlines()}
    assert ("more", "removed") in lines and ("mlp", "unchanged") in lines, run.stdout
    files.write({"mlp": files.twos}, retry_after_s=3)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "409" in run.stderr, run.stderr


def test_a_gateway_started_without_a_file_has_nothing_to_reload(files: Files) -> None:
    data = {"models": [{"name": "mlp", "onnx_file": str(files.ones)}], "lanes": {"count": 1}}
    with LiveServer(parse_gateway_config({**data, "onnx_dir": str(files.root / "onnx")})) as live:
        r = reload(live.base_url)
    assert r.status_code == 409 and "without a config file" in r.json()["detail"], r.text
