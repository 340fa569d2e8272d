"""The model files a Ray lane's actor loads, for actors on machines without them.

The gateway exports the served models to ONNX on its own machine before any lane
starts (server/lanes/export.py), and a user's ONNX file is a path there. An actor
on another node has neither: `gather` puts each file's bytes into Ray's object
store once per gateway process (kept while the file is unchanged, so a restarted
or joining lane reuses them), and the actor's `install` writes the files its node
lacks, or holds in another version, before it loads. Bytes cross the network only
to such nodes: a file already there with the same size and SHA-256 (every node on
the gateway's machine) is left alone.

Exported models land where the runners look for them (the lane's onnx_dir, with
the export's fingerprint beside it, so nothing is exported again); a user's file
whose path does not hold it on that node is written into the onnx_dir and the
runner is pointed there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import ray

from server.lanes.base import RunnerSpec, WorkerSpec


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One file a runner opens, as the gateway has it."""

    #: Where the gateway's runners find it (a relative path: from the worker's directory).
    path: str
    size: int
    sha256: str
    #: The bytes, in Ray's object store: fetched only by a node that needs them.
    content: Any


class _Shipped:
    """Files already put into the object store by this process's current connection to
    Ray: (path, size, mtime) → its ModelFile (the object store holds the bytes while
    this does). A new connection (another cluster, or the same one again after
    `ray.shutdown`) owns none of the old objects: they are forgotten then."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    job: ClassVar[str | None] = None
    files: ClassVar[dict[tuple[str, int, int], ModelFile]] = {}


def gather(spec: WorkerSpec) -> tuple[ModelFile, ...]:
    """The files the lane's runners open, each put into the object store once per process.

    Blocking (reads and hashes the files): keep it off the event loop."""
    found = []
    context = ray.get_runtime_context()
    job = f"{context.gcs_address}/{context.get_job_id()}"  # job ids restart per cluster
    with _Shipped.lock:
        if _Shipped.job != job:
            _Shipped.job, _Shipped.files = job, {}
    for path in dict.fromkeys(p for r in spec.runners for p in _paths(r, spec.onnx_dir)):
        try:
            stat = os.stat(path)
        except OSError:
            continue  # not exported here (another backend): the runner makes its own
        key = (path, stat.st_size, stat.st_mtime_ns)
        with _Shipped.lock:
            if key not in _Shipped.files:
                data = Path(path).read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                _Shipped.files[key] = ModelFile(path, len(data), digest, ray.put(data))
            found.append(_Shipped.files[key])
    return tuple(found)


def install(spec: WorkerSpec, files: tuple[ModelFile, ...]) -> WorkerSpec:
    """On the actor's node: write what is missing or differs; returns `spec` with any
    user ONNX file that had to move pointed at its copy."""
    moved: dict[str, str] = {}
    for f in files:
        if _holds(f.path, f):
            continue
        if _is_user_file(spec, f.path):
            target = Path(spec.onnx_dir) / "files" / f"{f.sha256[:16]}-{Path(f.path).name}"
            moved[f.path] = str(target)
        else:
            target = Path(f.path)
        if not _holds(str(target), f):
            _write(target, ray.get(f.content))
    if not moved:
        return spec
    runners = tuple(_pointed(r, moved) for r in spec.runners)
    return dataclasses.replace(spec, runners=runners)


def _paths(runner: RunnerSpec, onnx_dir: str) -> list[str]:
    workload = runner.workload
    if workload.onnx_file is not None:
        return [str(workload.onnx_file)]
    if runner.backend != "onnx":
        return []
    exported = Path(onnx_dir) / f"{workload.name}.onnx"
    # The fingerprint beside it tells the actor's export that the file is current.
    return [str(exported), str(exported) + ".json"]


def _is_user_file(spec: WorkerSpec, path: str) -> bool:
    return any(str(r.workload.onnx_file) == path for r in spec.runners)


def _pointed(runner: RunnerSpec, moved: dict[str, str]) -> RunnerSpec:
    source = str(runner.workload.onnx_file)
    if runner.workload.onnx_file is None or source not in moved:
        return runner
    workload = dataclasses.replace(runner.workload, onnx_file=Path(moved[source]))
    return dataclasses.replace(runner, workload=workload)


def _holds(path: str, f: ModelFile) -> bool:
    try:
        if os.stat(path).st_size != f.size:
            return False
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() == f.sha256
    except OSError:
        return False


def _write(target: Path, data: bytes) -> None:
    """Whole or not at all: a lane loading beside us never reads half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
