"""Helpers for the gateway tests: a real uvicorn server on a free port, real HTTP.

`LiveServer(config)` runs the app in-process on a background thread (fast: no
second interpreter to import torch into); `SubprocessServer(yaml_path)` runs
`python -m mlws serve` for the tests that need signals or exit codes. Both
wait for /readyz before handing out the base URL.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from server.app import create_app
from server.config import GatewayConfig, parse_gateway_config
from server.serve import GatewayServer, uvicorn_config

REPO = Path(__file__).resolve().parent.parent
#: Generous: two busy cores may be loading models for other tests too.
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_config(onnx_dir: Path | str, **overrides: Any) -> GatewayConfig:
    """A gateway serving `tiny` on onnx fp32 with 2 thread lanes, plus `overrides`."""
    data: dict[str, Any] = {
        "models": [{"name": "tiny"}],
        "lanes": {"count": 2, "kind": "thread", "threads_per_lane": 1},
        "onnx_dir": str(onnx_dir),
        "drain_timeout_s": 5,
    }
    data.update(overrides)
    return parse_gateway_config(data)


def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S, proc: Any = None) -> None:
    """Poll /readyz until 200 (a test helper; the server itself never polls)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before ready")
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready after {timeout_s} s: {last}")


class LiveServer:
    """The gateway on uvicorn in a background thread of this process."""

    def __init__(self, config: GatewayConfig, wait: bool = True) -> None:
        self.port = free_port()
        # gRPC only where a test sets grpc_port (0: a free port): gateways on the
        # default port would clash.
        if "grpc_port" not in config.model_fields_set:
            config = config.model_copy(update={"grpc_port": None})
        self.config = config
        self.app = create_app(config)
        self.server = GatewayServer(
            uvicorn_config(self.app, config, port=self.port, log_level="warning")
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._wait = wait
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        if self._wait:
            try:
                wait_ready(self.base_url)
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client bound to the server."""
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 60), **kwargs)

    @property
    def grpc_port(self) -> int:
        """The port the gateway's gRPC server bound (its config sets grpc_port)."""
        port = self.app.state.grpc.port
        if port is None:
            raise RuntimeError("this gateway serves no gRPC: give its config a grpc_port")
        return int(port)

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC server, as tritonclient.grpc and perf_analyzer take it."""
        return f"127.0.0.1:{self.grpc_port}"


class SubprocessServer:
    """`python -m mlws serve --config FILE` (i.e. `mlws serve`) in a child process."""

    def __init__(self, config_path: Path, port: int | None = None, grpc_port: str = "off") -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mlws", "serve", "--config", str(config_path)]
        # gRPC off unless asked for ("0": a free port): the default port would clash.
        cmd += ["--port", str(self.port), "--grpc-port", grpc_port]
        # A file, not a pipe: a pipe nobody reads until exit could fill and block the server.
        self._log_path = config_path.with_suffix(".log")
        self._log = open(self._log_path, "wb")  # noqa: SIM115 (closed in kill)
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def __enter__(self) -> SubprocessServer:
        try:
            wait_ready(self.base_url, proc=self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def terminate(self) -> None:
        """Send SIGTERM (graceful shutdown)."""
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Make sure the child is gone (our own process only)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._log.close()

    def output(self) -> str:
        """Everything the server printed so far."""
        return self._log_path.read_text(errors="replace")


def b64_inputs(array: np.ndarray) -> dict[str, Any]:
    """The base64 `inputs` object of an InferRequest."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"data": base64.b64encode(data.tobytes()).decode(), "shape": list(array.shape)}


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as a .npy file."""
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def pid_alive(pid: int) -> bool:
    """Whether a process exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def write_slow_onnx(path: Path, size: int = 1024, matmuls: int = 12) -> Path:
    """An identity model on [N, 4] that burns a fixed ~matmuls × 25 ms per run.

    A chain of size×size identity MatMuls whose first operand depends on the input
    (W + 0·sum(x)), so ONNX Runtime cannot fold it away at load. The cost does not
    grow with the batch, so warm-up at the largest dispatch costs no more than at 1.
    Used where a test needs a request to stay in flight (kill, overload, drain).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.eye(size, dtype=np.float32), "W")
    zero = numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero")
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["W", "s0"], ["m0"]),
    ]
    nodes += [helper.make_node("MatMul", [f"m{i}", "W"], [f"m{i + 1}"]) for i in range(matmuls)]
    nodes += [
        helper.make_node("ReduceMean", [f"m{matmuls}"], ["r"], keepdims=0),
        helper.make_node("Mul", ["r", "zero"], ["r0"]),
        helper.make_node("Add", ["x", "r0"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [weights, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def wait_busy(base_url: str, lane: int = 0, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll /v1/lanes until `lane`'s worker executes a dispatch (not merely holds one:
    a kill then hits the run itself); returns its row."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = httpx.get(f"{base_url}/v1/lanes", timeout=5).json()["lanes"][lane]
        if row["running"] is not None:
            return row
        time.sleep(0.01)
    raise TimeoutError(f"lane {lane} never became busy")
