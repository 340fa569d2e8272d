"""The worker-side code every kind of lane runs: `RunnerSet` loads and warms the
lane's runners, assembles a dispatch's rows into one batch (never on the event
loop), runs it and checks the output length.

Runs in the lane's thread (thread lanes) or in the worker process (process
lanes); importable without FastAPI or torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from backends.base import LoadOptions, Runner
from backends.registry import get_backend
from server.lanes.base import LaneError, PartRows, RunnerKey, RunnerSpec, WorkerSpec
from server.lanes.priority import apply_priority
from serving.plugins import import_plugins


class RunnerSet:
    """A lane's loaded runners and synthetic inputs (runs in the lane's worker)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._runners: dict[RunnerKey, Runner] = {}
        self._max_batch: dict[RunnerKey, int | None] = {}
        self._synthetic: dict[str, np.ndarray] = {}

    def load_all(self) -> None:
        """Take the lane's OS priority, then load every runner and warm it at batch 1
        and at its largest dispatch.

        Runs on the thread that will run every dispatch of the lane (or the worker
        process's main thread), before any runner exists: threads a runtime starts
        for its intra-op pool inherit the priority.
        """
        apply_priority(self.spec.priority, self.spec.lane)
        import_plugins(self.spec.plugins)  # a plugin's backend, in a fresh worker process
        for r in self.spec.runners:
            self._runners[r.key] = self._load_one(r)
            self._max_batch[r.key] = r.workload.max_batch
            self._warm(r)

    def load(self, runners: Sequence[RunnerSpec]) -> None:
        """Load and warm `runners` at run time (on the lane's thread, between dispatches);
        one with the key of a loaded runner replaces it once the new one has warmed.

        All or nothing: if one fails, none of `runners` is kept and the old ones stay.
        """
        fresh: dict[RunnerKey, Runner] = {}
        specs = with_runners(self.spec, runners)
        try:
            for r in runners:
                fresh[r.key] = self._load_one(r)
                self._warm(r, fresh[r.key])
        except BaseException:
            for runner in fresh.values():
                runner.close()
            raise
        for r in runners:
            old = self._runners.get(r.key)
            self._runners[r.key] = fresh[r.key]
            self._max_batch[r.key] = r.workload.max_batch
            self._synthetic.pop(r.name, None)  # a new version may take another shape
            if old is not None:
                old.close()
        self.spec = specs

    def unload(self, keys: Sequence[RunnerKey]) -> None:
        """Release the runners of `keys` (missing ones are ignored)."""
        for key in keys:
            runner = self._runners.pop(key, None)
            self._max_batch.pop(key, None)
            if runner is not None:
                runner.close()
        self.spec = without_runners(self.spec, keys)
        names = {r.name for r in self.spec.runners}
        for name in [n for n in self._synthetic if n not in names]:
            del self._synthetic[name]

    def _load_one(self, r: RunnerSpec) -> Runner:
        options = LoadOptions(
            precision=r.precision,
            device=self.spec.device,
            threads=self.spec.threads,
            seed=self.spec.seed,
            weights=r.weights,
            onnx_dir=self.spec.onnx_dir,
        )
        return get_backend(r.backend).load(r.workload, options)

    def _warm(self, r: RunnerSpec, runner: Runner | None = None) -> None:
        """Run `r` at batch 1 and at its largest dispatch (`runner`: a new one not yet in
        place, on random rows of its own shape)."""
        for n in sorted({1, r.max_samples}):
            if runner is None:
                self.run(r.key, self.synthetic(r.name, n))
                continue
            rng = np.random.default_rng(self.spec.seed)
            batch = rng.standard_normal((n, *r.input_shape), dtype=np.float32)
            _checked(r.key, batch, _run_batched(runner, r.workload.max_batch, batch))

    def synthetic(self, workload: str, samples: int) -> np.ndarray:
        """`samples` rows of a cached random input buffer (a view, no copy)."""
        buf = self._synthetic.get(workload)
        if buf is None or len(buf) < samples:
            spec = self._spec_of(workload)
            rows = max(samples, max(r.max_samples for r in self.spec.runners))
            rng = np.random.default_rng(self.spec.seed)
            buf = rng.standard_normal((rows, *spec.input_shape), dtype=np.float32)
            self._synthetic[workload] = buf
        return buf[:samples]

    def assemble(self, workload: str, parts: Sequence[PartRows]) -> np.ndarray:
        """The dispatch's rows as one batch; a view when no copy is needed."""
        n = sum(count for _, _, count in parts)
        if all(payload is None for payload, _, _ in parts):
            return self.synthetic(workload, n)
        if len(parts) == 1:
            payload, offset, count = parts[0]
            return payload[offset : offset + count]  # type: ignore[index]
        out = np.empty((n, *self._spec_of(workload).input_shape), dtype=np.float32)
        self.fill_synthetic(workload, out, write_rows(parts, out))
        return out

    def fill_synthetic(
        self, workload: str, out: np.ndarray, segments: Sequence[tuple[int, int]]
    ) -> None:
        """Fill rows [row, row + count) of `out` with synthetic input, per segment."""
        for row, count in segments:
            out[row : row + count] = self.synthetic(workload, count)

    def run(self, key: RunnerKey, batch: np.ndarray) -> np.ndarray:
        """Run one batch and check that one output row came back per input row."""
        runner = self._runners.get(key)
        if runner is None:
            raise LaneError(f"lane {self.spec.lane} has no runner for {'/'.join(key)}")
        return _checked(key, batch, _run_batched(runner, self._max_batch.get(key), batch))

    def interrupt(self) -> None:
        """Ask every runner that can (ONNX Runtime) to stop its run in progress."""
        for runner in self._runners.values():
            stop = getattr(runner, "interrupt", None)
            if stop is not None:
                stop()

    def close(self) -> None:
        """Release every runner."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()

    def input_shape(self, workload: str) -> tuple[int, ...]:
        """Shape of one input sample of `workload`."""
        return self._spec_of(workload).input_shape

    def _spec_of(self, workload: str) -> RunnerSpec:
        return next(r for r in self.spec.runners if r.name == workload)


def with_runners(spec: WorkerSpec, runners: Sequence[RunnerSpec]) -> WorkerSpec:
    """`spec` with `runners` added, each replacing the one of its key."""
    keys = {r.key for r in runners}
    kept = tuple(r for r in spec.runners if r.key not in keys)
    return dataclasses.replace(spec, runners=kept + tuple(runners))


def without_runners(spec: WorkerSpec, keys: Sequence[RunnerKey]) -> WorkerSpec:
    """`spec` without the runners of `keys`."""
    gone = set(keys)
    return dataclasses.replace(spec, runners=tuple(r for r in spec.runners if r.key not in gone))


def _run_batched(runner: Runner, max_batch: int | None, batch: np.ndarray) -> np.ndarray:
    if max_batch == 1 and len(batch) > 1:
        # A fixed-batch ONNX file: run sample by sample.
        return np.concatenate([runner.run(batch[i : i + 1]) for i in range(len(batch))])
    return runner.run(batch)


def _checked(key: RunnerKey, batch: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """`outputs`, once one output row came back per input row (else LaneError)."""
    if outputs.ndim < 1 or outputs.shape[0] != batch.shape[0]:
        raise LaneError(
            f"model {key[0]} returned {outputs.shape[0] if outputs.ndim else 0} output rows "
            f"for a batch of {batch.shape[0]}"
        )
    return outputs


def write_rows(parts: Sequence[PartRows], out: np.ndarray) -> list[tuple[int, int]]:
    """Copy the real parts' rows into `out`; return (row, count) of the synthetic ones."""
    synthetic, row = [], 0
    for payload, offset, count in parts:
        if payload is None:
            synthetic.append((row, count))
        else:
            out[row : row + count] = payload[offset : offset + count]
        row += count
    return synthetic


def split_outputs(outputs: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Row views of `outputs`, one per part, in dispatch order."""
    views, row = [], 0
    for count in counts:
        views.append(outputs[row : row + count])
        row += count
    return views


def timed_run(runners: RunnerSet, key: RunnerKey, batch: np.ndarray) -> tuple[np.ndarray, float]:
    """Run a batch and return its outputs with the measured service time (seconds)."""
    t0 = time.perf_counter()
    outputs = runners.run(key, batch)
    return outputs, time.perf_counter() - t0
