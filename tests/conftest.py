"""Shared fixtures: one ONNX export cache per test session (exports take seconds), and
a gateway serving the tiny model for the modules that only need the default one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_fixtures import LiveServer, tiny_config


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def tiny_server(onnx_dir: Path) -> Iterator[LiveServer]:
    """A real gateway with `tiny_config` defaults, one per test module."""
    with LiveServer(tiny_config(onnx_dir)) as live:
        yield live


@pytest.fixture(scope="module")
def tiny_http(tiny_server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client bound to `tiny_server`."""
    with tiny_server.client() as c:
        yield c
