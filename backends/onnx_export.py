"""Export in-tree workloads to ONNX with a dynamic batch axis, cached on disk.

A sidecar `<name>.onnx.json` records what the file was built from (model
source, torch version, seed, weights); a file whose record still matches is
reused instead of re-exported. Exports are serialised by a file lock so that
several lanes starting at once do not race on one path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workloads.registry import Workload

OPSET = 18
PARITY_RTOL = 1e-4


def fingerprint(workload: Workload, seed: int, weights: str | None) -> dict[str, str]:
    """Everything that changes the exported graph or its weights."""
    import torch

    import workloads

    # Hashing the whole model package is coarse but safe: any edit to a model
    # definition (or its helpers) invalidates the cached graph.
    source = hashlib.sha256()
    for py in sorted(Path(workloads.__file__).parent.glob("*.py")):
        source.update(py.read_bytes())
    record = {
        "workload": workload.name,
        "source_sha256": source.hexdigest(),
        "torch": torch.__version__,
        "opset": str(OPSET),
        "seed": str(seed) if weights is None else "",
        "weights_sha256": file_sha256(Path(weights)) if weights else "",
    }
    return record


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Parity:
    """How closely ONNX Runtime reproduced PyTorch on random inputs."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: float  # largest |onnx − torch| over every output
    relative_error: float  # max_abs_diff ÷ max |torch output|: the checked figure
    top1_agreement: float  # fraction of samples whose arg-max class is the same
    samples: int

    def describe(self) -> str:
        sizes = ", ".join(map(str, self.batch_sizes))
        return (
            f"parity vs PyTorch at batch {sizes}: max abs diff {self.max_abs_diff:.2e}, "
            f"relative {self.relative_error:.2e} (limit {PARITY_RTOL:.0e}), top-1 agreement "
            f"{self.top1_agreement:.0%} of {self.samples} samples"
        )


@dataclass(frozen=True)
class Export:
    """What `export_onnx_checked` did: the file, and whether it was reused."""

    path: Path
    reused: bool
    parity: Parity | None  # of this export, or recorded when the reused file was made


def _meta_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".json")


def _read_meta(path: Path) -> dict[str, object] | None:
    try:
        meta = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_up_to_date(path: Path, record: dict[str, str]) -> bool:
    """Whether the cached file was built from exactly `record` (parity figures aside)."""
    meta = _read_meta(path) if path.exists() else None
    return meta is not None and {k: meta.get(k) for k in record} == record


def will_reuse(
    workload: Workload,
    cache_dir: Path | str = "models/onnx",
    *,
    seed: int = 0,
    weights: str | None = None,
) -> bool:
    """Whether `export_onnx` would reuse the cached file (for saying so before it runs)."""
    path = Path(cache_dir) / f"{workload.name}.onnx"
    return is_up_to_date(path, fingerprint(workload, seed, weights))


def export_onnx(
    workload: Workload,
    cache_dir: Path | str = "models/onnx",
    *,
    seed: int = 0,
    weights: str | None = None,
    force: bool = False,
    verify: bool = True,
) -> Path:
    """Return `<cache_dir>/<name>.onnx`, exporting it only when missing or stale.

    With `verify`, a fresh export is checked for parity with PyTorch at batch
    sizes 1 and 8 before it replaces the cached file.
    """
    return export_onnx_checked(
        workload, cache_dir, seed=seed, weights=weights, force=force, verify=verify
    ).path


def export_onnx_checked(
    workload: Workload,
    cache_dir: Path | str = "models/onnx",
    *,
    seed: int = 0,
    weights: str | None = None,
    force: bool = False,
    verify: bool = True,
) -> Export:
    """`export_onnx`, telling whether the file was reused and the parity figures checked."""
    path = Path(cache_dir) / f"{workload.name}.onnx"
    record = fingerprint(workload, seed, weights)
    with locked(path):
        if not force and is_up_to_date(path, record):
            return Export(path, reused=True, parity=_recorded_parity(path))
        tmp = path.with_suffix(".tmp.onnx")
        module = workload.build_module(seed=seed, weights=weights).eval()
        _export_module(module, workload.spec.input_shape, tmp)
        parity = parity_figures(module, tmp, workload.spec.input_shape) if verify else None
        if parity is not None and parity.relative_error > PARITY_RTOL:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"ONNX export of '{workload.name}' differs from PyTorch: "
                f"relative error {parity.relative_error:.2e} > {PARITY_RTOL:.0e}"
            )
        os.replace(tmp, path)
        meta = {**record, "parity": asdict(parity)} if parity else record
        _meta_path(path).write_text(json.dumps(meta, indent=1))
    return Export(path, reused=False, parity=parity)


def _recorded_parity(path: Path) -> Parity | None:
    """The parity figures stored beside a cached file (files from older versions have none)."""
    figures = (_read_meta(path) or {}).get("parity")
    if not isinstance(figures, dict):
        return None
    try:
        return Parity(**{**figures, "batch_sizes": tuple(figures["batch_sizes"])})
    except (TypeError, KeyError):
        return None


def _export_module(module: object, sample_shape: tuple[int, ...], out: Path) -> None:
    import torch

    x = torch.randn(2, *sample_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter logs a warning per missing torchvision op and prints progress:
    # noise for a model that uses none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with (
        torch.inference_mode(False),
        contextlib.redirect_stdout(None),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["input"],
            output_names=["output"],
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    program.save(str(out))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual − expected| ÷ max |expected|: scale-free, robust to near-zero logits."""
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual - expected))) / scale


def parity_error(
    module: object,
    path: Path,
    sample_shape: tuple[int, ...],
    batch_sizes: Sequence[int] = (1, 8),
    seed: int = 1234,
) -> float:
    """Worst relative error between PyTorch and ONNX Runtime on random inputs."""
    return parity_figures(module, path, sample_shape, batch_sizes, seed).relative_error


def parity_figures(
    module: object,
    path: Path,
    sample_shape: tuple[int, ...],
    batch_sizes: Sequence[int] = (1, 8),
    seed: int = 1234,
) -> Parity:
    """PyTorch and ONNX Runtime on the same random inputs: differences and top-1 agreement."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = worst_abs = 0.0
    same = total = 0
    for n in batch_sizes:
        x = rng.standard_normal((n, *sample_shape), dtype=np.float32)
        with torch.inference_mode():
            expected = module(torch.from_numpy(x)).numpy()  # type: ignore[operator]
        actual = session.run(None, {name: x})[0]
        worst = max(worst, relative_error(actual, expected))
        worst_abs = max(worst_abs, float(np.max(np.abs(actual - expected))))
        flat_a, flat_e = actual.reshape(n, -1), expected.reshape(n, -1)
        same += int((flat_a.argmax(axis=1) == flat_e.argmax(axis=1)).sum())
        total += n
    return Parity(tuple(batch_sizes), worst_abs, worst, same / total if total else 1.0, total)
