"""Run a gateway as a child process for a live experiment or benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Block until `/readyz` answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"gateway at {url} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def gateway(
    config: dict[str, Any], *, ready_timeout_s: float = 300.0, log: Path | None = None
) -> Iterator[str]:
    """Start `mlws serve` on a free port with `config`; yields its base URL.

    The gateway is stopped with SIGTERM (graceful drain) on exit, and killed if
    it does not stop within its drain timeout plus a margin.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        # gRPC only if `config` asks for it (grpc_port: 0 picks a free one; GET /v1/models
        # says which): gateways on the default port would clash.
        served = {"grpc_port": None, **config, "host": "127.0.0.1", "port": port}
        path.write_text(yaml.safe_dump(served))
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(path)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, ready_timeout_s)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=float(config.get("drain_timeout_s", 10)) + 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if log:
                out.close()  # type: ignore[union-attr]
