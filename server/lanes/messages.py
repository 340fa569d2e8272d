"""What crosses the pipe between a process lane and its worker: small dataclasses,
never tensors (those go through shared memory, server/lanes/shm.py).

Parent → worker: `RunRequest`, `LoadRunners`, `UnloadRunners`. Worker → parent:
`Loaded` or `LoadFailed` once, then one `RunDone` or `RunFailed` per run request and
one `Changed` or `ChangeFailed` per load or unload. Closing the pipe stops the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.lanes.base import RunnerKey, RunnerSpec


@dataclass(frozen=True)
class RunRequest:
    """Run one dispatch whose input rows are in `input_block` (if any)."""

    dispatch_id: int
    key: RunnerKey
    #: Samples in the dispatch.
    samples: int
    #: The shared block holding the real rows; None: every row is synthetic.
    input_block: str | None
    #: (row, count) ranges the worker fills with synthetic input itself.
    synthetic: list[tuple[int, int]]
    #: The shared block the worker writes the outputs to.
    output_block: str


@dataclass(frozen=True)
class LoadRunners:
    """Load and warm these runners at run time (each replacing the one of its key)."""

    runners: tuple[RunnerSpec, ...]


@dataclass(frozen=True)
class UnloadRunners:
    """Release the runners of these keys."""

    keys: tuple[RunnerKey, ...]


@dataclass(frozen=True)
class Changed:
    """A `LoadRunners` or `UnloadRunners` is done."""


@dataclass(frozen=True)
class ChangeFailed:
    """A `LoadRunners` failed; the worker keeps the runners it had."""

    error: str


@dataclass(frozen=True)
class Loaded:
    """Every runner is loaded and warmed; the worker serves requests now."""

    pid: int


@dataclass(frozen=True)
class LoadFailed:
    """Loading failed; the worker has exited."""

    error: str


@dataclass(frozen=True)
class RunDone:
    """The dispatch ran; its outputs, of `shape`, are in the output block."""

    dispatch_id: int
    shape: tuple[int, ...]
    service_s: float


@dataclass(frozen=True)
class RunFailed:
    """The dispatch raised; `error` names the exception (sent on to clients)."""

    dispatch_id: int
    error: str


#: What the parent may send.
WorkerRequest = RunRequest | LoadRunners | UnloadRunners

#: What a worker may send.
WorkerReply = Loaded | LoadFailed | RunDone | RunFailed | Changed | ChangeFailed
