"""What every kind of lane shares: the specs a worker loads, one dispatch as a lane
sees it and what comes back, the lane errors, and the `Lane` interface.

Importable without FastAPI or torch: spawned workers unpickle these specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from workloads.registry import Workload

#: (workload, backend, precision): one loaded runner.
RunnerKey = tuple[str, str, str]

#: One part of a dispatch: the job's whole input (None: synthesized), offset, count.
PartRows = tuple[np.ndarray | None, int, int]


class LaneError(RuntimeError):
    """A dispatch could not run on its lane; the message says why (sent to clients)."""


class WorkerDied(LaneError):
    """The lane's worker process exited (crash, OOM kill, SIGKILL)."""


class NodeLost(LaneError):
    """The lane's node left the cluster (it died or was removed): the lane is gone for
    good, and its dispatch may be retried on another lane."""

    def __init__(self, lane: int, node: str, detail: str = "") -> None:
        self.lane = lane
        self.node = node
        why = f": {detail}" if detail else ""
        super().__init__(f"lane {lane} lost: node {node} left the cluster{why}")


@dataclass(frozen=True)
class RunnerSpec:
    """One runner a worker loads: picklable, so it crosses to spawned workers."""

    #: The model itself (spec, and the user's ONNX file if it is one): a worker
    #: needs no catalogue of its own.
    workload: Workload
    backend: str
    precision: str
    #: Largest dispatch the scheduler can form for this group: the warm-up size.
    max_samples: int
    #: A torch state_dict for the model, if configured.
    weights: str | None = None

    @property
    def name(self) -> str:
        """The workload's name, as dispatches name it."""
        return self.workload.name

    @property
    def key(self) -> RunnerKey:
        return (self.workload.name, self.backend, self.precision)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.workload.spec.input_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one output row."""
        return tuple(self.workload.spec.output_shape)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one lane's worker needs to load its runners."""

    lane: int
    runners: tuple[RunnerSpec, ...]
    threads: int
    device: str = "auto"
    seed: int = 0
    onnx_dir: str = "models/onnx"
    #: The lane group's name and OS priority ("normal", or "low": yields the CPU).
    group: str = "default"
    priority: str = "normal"
    #: The config's plugins: a spawned worker imports them before it loads a runner.
    plugins: tuple[str, ...] = ()

    def max_bytes(self, shape_of: str) -> int:
        """Bytes of the largest float32 input ("input") or output ("output") batch."""
        sizes = [
            r.max_samples * math.prod(r.input_shape if shape_of == "input" else r.output_shape)
            for r in self.runners
        ]
        return 4 * max(sizes, default=1)


@dataclass
class LaneBatch:
    """One dispatch as a lane sees it; built on the loop without copying any tensor."""

    dispatch_id: int
    key: RunnerKey
    #: Per part: (the job's whole input, or None for synthesized input; offset; count).
    parts: list[PartRows]

    @property
    def samples(self) -> int:
        return sum(count for _, _, count in self.parts)

    @property
    def counts(self) -> list[int]:
        """Samples of each part, in dispatch order."""
        return [count for _, _, count in self.parts]


@dataclass
class LaneResult:
    """What a lane returns: one output array per part, and the measured run time."""

    outputs: list[np.ndarray]
    service_s: float


def runner_names(runners: tuple[RunnerSpec, ...]) -> str:
    """`model/backend/precision, ...` of `runners`, for messages."""
    return ", ".join("/".join(r.key) for r in runners)


class LaneStatus:
    """The state every kind of lane keeps the same way (what /v1/lanes shows)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.index = spec.lane
        self.spec = spec
        self.ready = False
        #: The id of the dispatch the worker is executing (None: idle, or not yet handed over).
        self.running: int | None = None
        self.restarts = 0
        self.error: str | None = None


class Lane(Protocol):
    """A worker that loads its runners and runs one dispatch at a time.

    Whether a lane holds a dispatch is the scheduling core's to say
    (`Scheduler.lane_busy`); a lane only knows which dispatch its worker is
    executing right now (`running`).
    """

    index: int
    kind: str
    spec: WorkerSpec
    ready: bool
    #: The id of the dispatch the worker is executing (None: idle, or not yet handed over).
    running: int | None
    restarts: int
    error: str | None

    @property
    def pid(self) -> int | None:
        """The worker process id (process lanes), else None."""
        ...

    async def start(self) -> None:
        """Load and warm every runner; raises LaneError if that fails."""
        ...

    async def load(self, runners: tuple[RunnerSpec, ...]) -> None:
        """Load and warm `runners` at run time on the lane's worker, between dispatches
        (one with a loaded runner's key replaces it); LaneError if that fails, the lane
        keeping what it had. A worker restarted later loads them too (`spec` follows)."""
        ...

    async def unload(self, keys: tuple[RunnerKey, ...]) -> None:
        """Release the runners of `keys` on the lane's worker (`spec` follows)."""
        ...

    async def run(self, batch: LaneBatch) -> LaneResult:
        """Run one dispatch; raises LaneError (WorkerDied) if it cannot."""
        ...

    async def abort(self, reason: str) -> None:
        """Stop the dispatch in progress (the watchdog's call) and replace the worker."""
        ...

    async def close(self) -> None:
        """Stop the worker and release its resources."""
        ...
