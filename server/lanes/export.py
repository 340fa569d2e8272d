"""ONNX export, once, in the gateway process, before any lane's worker starts.

Workers then find an up-to-date file and only open it, instead of racing to
export the same graph (the exporter's file lock would serialise them anyway,
but each would pay for building the module first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backends.onnx_backend import fp16_copy
from backends.onnx_export import export_onnx_checked, will_reuse
from workloads.registry import Workload

if TYPE_CHECKING:
    from server.config import GatewayConfig

log = logging.getLogger("mlws.lanes")


def export_models(config: GatewayConfig, workloads: Mapping[str, Workload]) -> None:
    """Export every in-tree model served on ONNX (a user's ONNX file needs none)."""
    for model in config.models:
        workload = workloads[model.name]
        if "onnx" not in model.backends or workload.onnx_file is not None:
            continue
        options: dict[str, Any] = {"seed": config.seed, "weights": model.weights}
        if not will_reuse(workload, config.onnx_dir, **options):
            # Said before it starts: a fresh export takes a while on a small machine.
            log.info("exporting %s to ONNX (cached in %s)", model.name, config.onnx_dir)
        started = time.monotonic()
        done = export_onnx_checked(workload, config.onnx_dir, **options)
        if done.reused:
            log.info("reusing %s (up to date)", done.path)
        else:
            parity = done.parity.describe() if done.parity else "not checked"
            log.info("exported %s in %.1f s; %s", done.path, time.monotonic() - started, parity)
        if "fp16" in model.precisions:
            fp16_copy(done.path)
