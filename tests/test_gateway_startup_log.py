"""The gateway's start-up says what it is doing: export or reuse, then each calibration."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.gateway_fixtures import LiveServer, tiny_config


def _started(onnx_dir: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with LiveServer(tiny_config(onnx_dir)):
        pass
    return [r.getMessage() for r in caplog.records if r.name.startswith("mlws")]


def test_start_logs_export_then_reuse_and_every_calibration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlws")
    onnx_dir = tmp_path / "onnx"

    first = _started(onnx_dir, caplog)
    assert any(m.startswith("exporting tiny to ONNX") for m in first), first
    exported = [m for m in first if m.startswith("exported ")]
    assert exported and "parity vs PyTorch" in exported[0] and "top-1 agreement" in exported[0]
    calibrated = [m for m in first if m.startswith("calibrated tiny on onnx fp32 at batch ")]
    assert any(" at batch 1 " in m for m in calibrated), first  # batch 1 and the largest
    assert all("ms mean of 3 runs" in m for m in calibrated)

    second = _started(onnx_dir, caplog)
    assert not any(m.startswith("exporting") for m in second), second  # nothing to export
    assert any(m.startswith("reusing ") and "tiny.onnx (up to date)" in m for m in second)
