"""The worker side of a Ray lane: a Ray actor that owns the lane's runners.

A plain class here, made an actor (`ray.remote`) where the lane creates it, so
that this module imports without a Ray runtime. Like a process lane's worker it
loads and warms its runners once, in its constructor (after writing the model
files its node lacks, server/lanes/model_files.py), then runs one dispatch per
call; runners loaded or unloaded at run time come as calls too, between
dispatches. The actor's constructor and its calls run on the worker process's one
thread (no `max_concurrency`): the OS priority taken before loading, and the
intra-op threads the runtimes start, belong to the thread that runs every
dispatch. The gateway side is server/lanes/ray_lane.py.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import ray

from server.lanes.base import RunnerKey, RunnerSpec, WorkerSpec
from server.lanes.model_files import ModelFile, install
from server.lanes.runners import RunnerSet, timed_run


class LaneActor:
    """One lane's runners, in a Ray worker process on some node of the cluster."""

    def __init__(self, spec: WorkerSpec, files: tuple[ModelFile, ...] = ()) -> None:
        #: Why loading failed: reported by `ready`, so the lane says it as process
        #: lanes do instead of as a Ray creation-task traceback.
        self._error: str | None = None
        try:
            spec = install(spec, files)  # the model files this node lacks
        except Exception as exc:
            self._error = f"cannot install the model files: {type(exc).__name__}: {exc}"
        self._runners = RunnerSet(spec)
        if self._error is None:
            try:
                self._runners.load_all()  # takes the lane's OS priority first
            except Exception as exc:
                self._error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> dict[str, Any]:
        """Where the actor runs (pid, Ray node id in hex) and why loading failed, if it did."""
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "error": self._error,
        }

    def load(self, runners: tuple[RunnerSpec, ...], files: tuple[ModelFile, ...]) -> None:
        """Load and warm `runners` at run time, after writing the files this node lacks
        (raises if that fails; the actor keeps what it had)."""
        spec = install(dataclasses.replace(self._runners.spec, runners=runners), files)
        self._runners.load(spec.runners)

    def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys`."""
        self._runners.unload(keys)

    def run(
        self,
        key: RunnerKey,
        samples: int,
        batch: np.ndarray | None,
        synthetic: list[tuple[int, int]],
    ) -> tuple[np.ndarray, float]:
        """Run one dispatch of `samples` rows: `batch` holds its real rows (None: all
        synthetic), and the (row, count) ranges in `synthetic` are filled here."""
        workload = key[0]
        if batch is None:
            batch = self._runners.synthetic(workload, samples)
        elif synthetic:
            # From the object store the batch is a read-only view of shared memory;
            # only filling rows needs a copy of our own (no runner writes its input).
            batch = batch.copy()
            self._runners.fill_synthetic(workload, batch, synthetic)
        return timed_run(self._runners, key, batch)
