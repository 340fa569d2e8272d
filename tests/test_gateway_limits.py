"""Limits that protect the process (server/http_guard.py, server/json_budget.py), on a
real gateway with small limits, driven over raw sockets where HTTP clients would
refuse to misbehave.

Each abusive client must get a clear 4xx or a closed connection, never hang,
while a well-behaved request on another connection still gets its 200. No test
measures time: a refused client is read until the server closes it, under a
generous socket timeout that only a hang would reach.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from server.codecs import TooLargeError
from server.errors import error_response
from server.json_budget import check_json_values, json_value_limit
from server.wire_ints import parse_wire_int
from tests.gateway_fixtures import LiveServer, tiny_config
from workloads.specs import TINY

#: Small limits, so that every refusal happens quickly.
LIMITS = {
    "max_connections": 24,
    "max_header_bytes": 16384,
    "max_headers": 40,
    "header_timeout_s": 2,
    "body_timeout_s": 3,
    "keep_alive_s": 120,  # the good client's connection outlives every test
}
#: Only a hang gets this far.
HANG_S = 60.0
HEADER_LENGTH = "Inference-Header-Content-Length"
GOOD = {"model": "tiny", "class": "interactive", "batch_size": 1}


@pytest.fixture(scope="module")
def server(onnx_dir: Path) -> Iterator[LiveServer]:
    config = tiny_config(onnx_dir, limits=LIMITS, max_body_mb=40)
    with LiveServer(config) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        assert c.get("/healthz").status_code == 200  # its connection now stays open
        yield c


# ------------------------------------------------------------------ raw-socket helpers
def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S)


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what the server still reads: it may close in the middle, as it should."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def answer(sock: socket.socket) -> tuple[int | None, dict[str, Any] | None]:
    """Read until the server closes the connection: (status, JSON body), or (None, None)
    if it closed (or reset) without an answer. A hang fails on the socket timeout."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None, None
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else None


def while_good_request_runs(http: httpx.Client, bad: Callable[[], Any]) -> Any:
    """Run `bad` on a thread while a well-behaved request is answered; return its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(bad()))
    thread.start()
    good = http.post("/infer", json=GOOD)
    thread.join(HANG_S)
    assert not thread.is_alive(), "the abusive client was never answered nor closed"
    assert good.status_code == 200, good.text
    return result[0]


def head(path: str = "/healthz", method: str = "GET", extra: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n".encode() + extra


def requests_total(http: httpx.Client, outcome: str) -> float:
    """mlws_requests_total of model "unknown", class "interactive", `outcome`."""
    for line in http.get("/metrics").text.splitlines():
        labels = ('model="unknown"', 'class="interactive"', f'outcome="{outcome}"')
        if line.startswith("mlws_requests_total{") and all(x in line for x in labels):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no mlws_requests_total series for outcome {outcome}")


def wait_for_count(http: httpx.Client, outcome: str, target: float) -> float:
    """requests_total once it reaches `target`: the application counts a request that
    lost its body after the connection is gone, so the count follows asynchronously."""
    for _ in range(int(HANG_S / 0.05)):
        count = requests_total(http, outcome)
        if count >= target:
            return count
        threading.Event().wait(0.05)
    return requests_total(http, outcome)


# ------------------------------------------------------------------ headers
def test_a_1_mib_header_is_refused(server: LiveServer, http: httpx.Client) -> None:
    def bad() -> tuple[int | None, Any]:
        sock = connect(server)
        send_quietly(sock, head(extra=b"X-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"))
        return answer(sock)

    status, _ = while_good_request_runs(http, bad)
    assert status in (431, None)  # the server may close while the client still sends


def test_headers_just_over_the_byte_limit_get_431(server: LiveServer) -> None:
    sock = connect(server)
    send_quietly(sock, head(extra=b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"))
    status, body = answer(sock)
    assert status == 431 and body is not None
    assert body["error"] == "too_large" and body["field"] == "headers"
    assert "16384 bytes" in body["detail"]


def test_ten_thousand_headers_are_refused(server: LiveServer, http: httpx.Client) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))

    def bad() -> tuple[int | None, Any]:
        sock = connect(server)
        send_quietly(sock, head(extra=lines + b"\r\n"))
        return answer(sock)

    status, body = while_good_request_runs(http, bad)
    assert status in (431, None)
    if body is not None:
        assert "more than 40 header lines" in body["detail"]


def test_a_slowloris_client_gets_408(server: LiveServer, http: httpx.Client) -> None:
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        # One header byte at a time: each arrives well within any inactivity timer.
        send_quietly(sock, head())
        for byte in b"X-Slow: " + b"a" * 10_000:
            if stop.wait(0.05):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    def bad() -> tuple[int | None, Any]:
        sock = connect(server)
        threading.Thread(target=trickle, args=(sock,), daemon=True).start()
        try:
            return answer(sock)
        finally:
            stop.set()

    status, body = while_good_request_runs(http, bad)
    assert status == 408 and body is not None and body["error"] == "timeout"
    assert "headers" in body["detail"]


def test_idle_connections_over_the_limit_are_refused(
    server: LiveServer, http: httpx.Client
) -> None:
    socks = [connect(server) for _ in range(200)]
    # The good client's connection was open before: it is still served.
    assert http.post("/infer", json=GOOD).status_code == 200
    statuses = [answer(s)[0] for s in socks]  # every one is closed: refused, or idle
    refused = statuses.count(503)
    assert refused >= 200 - LIMITS["max_connections"], statuses
    assert set(statuses) <= {503, None}
    assert http.get("/healthz").status_code == 200


# ------------------------------------------------------------------ bodies
def test_a_slow_body_gets_408_and_counts_as_invalid(server: LiveServer, http: httpx.Client) -> None:
    before = requests_total(http, "invalid")

    def bad() -> tuple[int | None, Any]:
        sock = connect(server)
        extra = b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":'
        send_quietly(sock, head("/infer", "POST", extra))
        return answer(sock)  # the rest of the body never comes

    status, body = while_good_request_runs(http, bad)
    assert status == 408 and body is not None and body["field"] == "body"
    assert wait_for_count(http, "invalid", before + 1) == before + 1


def test_a_client_leaving_mid_body_is_cancelled(server: LiveServer, http: httpx.Client) -> None:
    before = requests_total(http, "cancelled")
    sock = connect(server)
    extra = b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b" " * 1000
    send_quietly(sock, head("/infer", "POST", extra))
    sock.close()
    assert wait_for_count(http, "cancelled", before + 1) == before + 1


def test_a_32_mib_nested_list_is_refused_before_parsing(http: httpx.Client) -> None:
    values = 16 << 20
    body = b'{"model":"tiny","class":"batch","inputs":[' + b"0," * (values - 1) + b"0]}"

    def bad() -> httpx.Response:
        return http.post("/infer", content=body, headers={"content-type": "application/json"})

    r = while_good_request_runs(http, bad)
    assert r.status_code == 413, r.text
    error = r.json()
    assert error["error"] == "too_large" and "base64" in error["detail"]


def test_the_largest_nested_list_request_still_passes(http: httpx.Client) -> None:
    x = np.zeros((64, 3, 32, 32), dtype=np.float32).tolist()
    r = http.post("/infer", json={"model": "tiny", "class": "batch", "inputs": x})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ numbers and echoes
def test_unicode_digit_priority_is_400(http: httpx.Client) -> None:
    tensor = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32"}
    tensor["data"] = [0.0] * 3072
    body = {"inputs": [tensor], "parameters": {"priority": "²"}}
    r = http.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 400, r.text
    assert "parameters.priority" in r.json()["error"]


def test_unicode_digit_header_length_is_400(http: httpx.Client) -> None:
    headers = {HEADER_LENGTH: "²".encode("latin-1"), "content-type": "application/json"}
    r = http.post("/v2/models/tiny/infer", content=b"{}", headers=headers)
    assert r.status_code == 400, r.text
    assert HEADER_LENGTH in r.json()["error"]


def test_an_unknown_model_name_is_not_echoed_whole(http: httpx.Client) -> None:
    r = http.post("/infer", json={**GOOD, "model": "m" * 100_000})
    assert r.status_code == 404 and len(r.content) < 1000


def test_a_500_carries_no_exception_text() -> None:
    response = error_response(RuntimeError("secret at /srv/model.onnx"))
    body = json.loads(bytes(response.body))
    assert response.status_code == 500 and body["error"] == "internal_error"
    assert "secret" not in body["detail"] and "reference" in body["detail"]


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), (" 42 ", 42), ("²", None), ("١", None), ("1_000", None), ("-1", None), ("", None)],
)
def test_wire_ints_are_ascii_digits_only(text: str, value: int | None) -> None:
    assert parse_wire_int(text) == value


def test_json_values_are_bounded_by_the_largest_tensor_and_the_cap(onnx_dir: Path) -> None:
    config = tiny_config(onnx_dir)
    limit = json_value_limit(config, [TINY])
    largest = json.dumps({"inputs": np.zeros((64, 3, 32, 32)).tolist()}).encode()
    check_json_values(largest, limit)  # the largest valid request passes
    with pytest.raises(TooLargeError, match="base64"):
        check_json_values(b"[" + b"0," * limit + b"0]", limit)
    capped = tiny_config(onnx_dir, limits={"max_json_values": 2048})
    assert json_value_limit(capped, [TINY]) == 2048
