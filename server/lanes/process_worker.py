"""The worker side of a process lane: the entry point of the spawned process.

Load and warm the runners, say `Loaded` (or `LoadFailed` and exit), then serve
`RunRequest`s, and runners loaded or unloaded at run time (`LoadRunners`,
`UnloadRunners`), one at a time, until the parent goes away (EOF on the pipe). Tensors come and go
through the parent's shared blocks; only the messages of server/lanes/messages.py
cross the pipe.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection

from server.lanes.base import WorkerSpec
from server.lanes.messages import (
    Changed,
    ChangeFailed,
    Loaded,
    LoadFailed,
    LoadRunners,
    RunDone,
    RunFailed,
    RunRequest,
    UnloadRunners,
    WorkerReply,
    WorkerRequest,
)
from server.lanes.runners import RunnerSet, timed_run
from server.lanes.shm import AttachedBlocks


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of a lane's worker process."""
    # Ctrl-C reaches the whole process group; shutdown is the parent's decision.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runners = RunnerSet(spec)
    try:
        runners.load_all()
    except Exception as exc:
        conn.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Loaded(os.getpid()))
    blocks = AttachedBlocks()
    try:
        _serve(conn, runners, blocks)
    finally:
        blocks.close()
        runners.close()


def _serve(conn: Connection, runners: RunnerSet, blocks: AttachedBlocks) -> None:
    while True:
        try:
            request: WorkerRequest = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone, or closed the pipe to stop this worker
        if isinstance(request, RunRequest):
            conn.send(_answer_run(runners, blocks, request))
        else:
            conn.send(_change(runners, request))


def _answer_run(runners: RunnerSet, blocks: AttachedBlocks, request: RunRequest) -> WorkerReply:
    try:
        return _run_one(runners, blocks, request)
    except Exception as exc:
        return RunFailed(request.dispatch_id, f"{type(exc).__name__}: {exc}")


def _change(runners: RunnerSet, request: LoadRunners | UnloadRunners) -> WorkerReply:
    """Load or unload runners between two dispatches."""
    try:
        if isinstance(request, LoadRunners):
            runners.load(request.runners)
        else:
            runners.unload(request.keys)
    except Exception as exc:
        return ChangeFailed(f"{type(exc).__name__}: {exc}")
    return Changed()


def _run_one(runners: RunnerSet, blocks: AttachedBlocks, request: RunRequest) -> RunDone:
    """Run one dispatch; its outputs go to the output block."""
    workload, n = request.key[0], request.samples
    if request.input_block is None:
        batch = runners.synthetic(workload, n)
    else:
        # Detach from blocks the parent replaced.
        blocks.keep_only({request.input_block, request.output_block})
        batch = blocks.array(request.input_block, (n, *runners.input_shape(workload)))
        runners.fill_synthetic(workload, batch, request.synthetic)
    outputs, service_s = timed_run(runners, request.key, batch)
    del batch
    out = blocks.array(request.output_block, outputs.shape)
    out[...] = outputs
    return RunDone(request.dispatch_id, tuple(outputs.shape), service_s)
