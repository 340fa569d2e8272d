"""Run the gateway on uvicorn (httptools, one worker): what `mlws serve` starts.

SIGHUP applies the config file's models again, without a restart (as POST
/v1/config/reload does; server/config_reload.py): the outcome goes to the log.

Shutdown on SIGTERM/SIGINT is graceful: the gateway stops taking new requests
(uvicorn closes its listening socket, the dispatcher refuses new jobs), queued
and running work drains for `drain_timeout_s`, whatever is left is answered
503, lanes stop (worker processes killed, shared memory unlinked), and the
process exits 0.

A start-up that fails (a model that cannot be timed, an export, a lane or the
calibration failing) never leaves the process waiting: `mlws serve` shuts down
and exits 1, its last line the reason, which /readyz showed meanwhile. An app
served by a plain `GatewayServer` (the tests) stays up with /readyz naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from server.config import ConfigFile, GatewayConfig
from server.http_guard import guarded_protocol

log = logging.getLogger("mlws.server")
#: uvicorn waits this much longer than the drain, so drain answers are flushed first.
SHUTDOWN_MARGIN_S = 5.0


class GatewayServer(uvicorn.Server):
    """uvicorn.Server that tells the gateway when shutdown starts, and exits 0 after it.

    With `exit_on_startup_failure`, a gateway whose start-up failed is shut down.
    """

    def __init__(self, config: uvicorn.Config, exit_on_startup_failure: bool = False) -> None:
        super().__init__(config)
        self.exit_on_startup_failure = exit_on_startup_failure
        #: Reloads SIGHUP started and not finished (held: the loop keeps weak references).
        self._reloads: set[asyncio.Task[None]] = set()

    @property
    def gateway(self) -> Any:
        """The app's Gateway once its lifespan has built it, else None."""
        return getattr(getattr(self.config.app, "state", None), "gateway", None)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's 0.1 s housekeeping tick; True stops the server."""
        if await super().on_tick(counter):
            return True
        gateway = self.gateway
        return self.exit_on_startup_failure and getattr(gateway, "phase", None) == "failed"

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the gateway's drain, then let uvicorn close sockets and wait."""
        gateway = self.gateway
        if gateway is not None:
            gateway.begin_drain()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the captured signal after a graceful shutdown, so that the
        # process would die *by* SIGTERM; a drained gateway exits 0 instead.
        with super().capture_signals(), self._reload_on_sighup():
            try:
                yield
            finally:
                # Cleared before uvicorn's context manager resumes and re-raises them.
                self._captured_signals.clear()

    @contextlib.contextmanager
    def _reload_on_sighup(self) -> Iterator[None]:
        """While serving, SIGHUP reloads the config file (uvicorn handles only SIGINT and
        SIGTERM; left alone, SIGHUP would end the process). Signals reach only the main
        thread: a server on another thread (the tests' LiveServer) has no handler."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)

    def _reload(self) -> None:
        """SIGHUP: start a reload (server/config_reload.py); it logs its outcome."""
        reloader = getattr(getattr(self.config.app, "state", None), "reloader", None)
        if reloader is None:
            log.warning("SIGHUP ignored: the gateway is still starting")
            return
        log.info("SIGHUP: reloading the config file")
        task = asyncio.ensure_future(reloader.reload_logged())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


def uvicorn_config(app: FastAPI, config: GatewayConfig, **overrides: object) -> uvicorn.Config:
    """The uvicorn settings the gateway runs with (httptools, one worker)."""
    settings: dict[str, object] = {
        "host": config.host,
        "port": config.port,
        # httptools, with the limits uvicorn lacks (server/http_guard.py).
        "http": guarded_protocol(config.limits, config.retry_after_s),
        "backlog": config.limits.backlog,
        "timeout_keep_alive": config.limits.keep_alive_s,
        "workers": 1,
        "lifespan": "on",
        "timeout_graceful_shutdown": config.drain_timeout_s + SHUTDOWN_MARGIN_S,
        "log_level": "info",
        "access_log": False,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)  # type: ignore[arg-type]


def run_server(config: GatewayConfig, config_file: ConfigFile | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or a failed start-up (exit 1, the reason
    printed last); 3 if uvicorn could not start. `config_file`: where `config` came
    from, read again on SIGHUP."""
    from server.app import create_app

    app = create_app(config, config_file)
    server = GatewayServer(uvicorn_config(app, config), exit_on_startup_failure=True)
    print(f"mlws gateway on http://{config.host}:{config.port} (docs at /docs)", flush=True)
    if config.grpc_port:
        print(f"KServe v2 over gRPC on {config.host}:{config.grpc_port}", flush=True)
    elif config.grpc_port == 0:
        print(f"KServe v2 over gRPC on {config.host}, a free port (logged at start)", flush=True)
    server.run()
    gateway = server.gateway
    if gateway is not None and gateway.phase == "failed":
        print(f"mlws serve: error: {gateway.error}", file=sys.stderr, flush=True)
        return 1
    return 0 if server.started else 3


def preflight(config: GatewayConfig) -> None:
    """Refuse, before anything starts, what could only fail later in a worker.

    Raises ValueError (one line) for a missing weights or ONNX file, an ONNX file
    the catalogue cannot read, a precision/device no backend here can run, a
    predictor file that cannot be loaded, or a model it cannot time (a user's
    ONNX file whose FLOPs could not be estimated: the line says what to add).
    """
    from backends.devices import resolve_device
    from backends.registry import cuda_available
    from server.catalogue import ServedModels
    from server.service_checks import check_service_models
    from server.service_times import load_service_models

    for i, model in enumerate(config.models):
        for key in ("weights", "onnx_file"):
            path = getattr(model, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"models.{i}.{key}: file not found: {path}")
        for backend in model.backends:
            cuda = cuda_available(backend)
            for precision in model.precisions:
                try:
                    resolve_device(config.device, precision, cuda)
                except ValueError as exc:
                    raise ValueError(f"models.{i}.precisions: {exc}") from None
    _check_ray(config)
    models = ServedModels.from_config(config)  # ValueError for an ONNX file it cannot read
    service_models = load_service_models(config, models.specs())
    # The same check the gateway's start-up makes, before anything is started.
    check_service_models(config, models.specs(), service_models)


def _check_ray(config: GatewayConfig) -> None:
    """ValueError (one line) if Ray lanes name a cluster nobody answers for."""
    kinds = {g.kind or config.lanes.kind for g in config.scheduler.groups()}
    address = config.lanes.ray.address
    if "ray" not in kinds or address is None:
        return
    from server.lanes.ray_cluster import check_reachable  # Ray only for Ray lanes

    try:
        check_reachable(address)
    except ConnectionError as exc:
        raise ValueError(f"lanes.ray.address: {exc}") from None
