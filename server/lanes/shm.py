"""Shared-memory blocks that carry a lane's tensors between the server and its worker.

The parent owns every block: it creates it, grows it (by replacing it with a
bigger one under a new name) and unlinks it when the lane stops. The worker only
attaches by name, so a worker that crashes leaks nothing, and its replacement
attaches to the same blocks. Only names, shapes and row ranges cross the pipe.
"""

from __future__ import annotations

import contextlib
import math
from multiprocessing import shared_memory

import numpy as np

_F32 = np.dtype(np.float32)


class ShmBlock:
    """A parent-owned block of shared memory, replaced by a bigger one when too small."""

    def __init__(self, size: int) -> None:
        self._shm = shared_memory.SharedMemory(create=True, size=max(1, size))

    @property
    def name(self) -> str:
        """The name a worker attaches to."""
        return self._shm.name

    @property
    def size(self) -> int:
        """Usable bytes."""
        return self._shm.size

    def ensure(self, nbytes: int) -> None:
        """Make the block hold at least `nbytes` (a new name if it had to grow)."""
        if nbytes <= self._shm.size:
            return
        old = self._shm
        # Grow by at least half again so that a slowly rising size does not
        # replace the block on every dispatch.
        self._shm = shared_memory.SharedMemory(create=True, size=max(nbytes, old.size * 3 // 2))
        _release(old, unlink=True)

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 view of the block's first bytes (drop it before `close`)."""
        return np.ndarray(shape, dtype=_F32, buffer=self._shm.buf)

    def close(self) -> None:
        """Unmap and unlink the block."""
        _release(self._shm, unlink=True)


class AttachedBlocks:
    """The worker's side: blocks attached by name, re-attached when a name changes."""

    def __init__(self) -> None:
        self._blocks: dict[str, shared_memory.SharedMemory] = {}

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 view of `shape` over the block called `name`."""
        shm = self._blocks.get(name)
        if shm is None:
            shm = self._blocks[name] = shared_memory.SharedMemory(name=name)
        if math.prod(shape) * _F32.itemsize > shm.size:
            raise ValueError(f"shared block {name} holds {shm.size} bytes; {shape} does not fit")
        return np.ndarray(shape, dtype=_F32, buffer=shm.buf)

    def keep_only(self, names: set[str]) -> None:
        """Detach from blocks the parent has replaced."""
        for name in [n for n in self._blocks if n not in names]:
            _release(self._blocks.pop(name), unlink=False)

    def close(self) -> None:
        """Detach from every block."""
        self.keep_only(set())


def _release(shm: shared_memory.SharedMemory, *, unlink: bool) -> None:
    # BufferError: a numpy view is still alive somewhere; the mapping goes when it does.
    with contextlib.suppress(BufferError):
        shm.close()
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
