"""The saved-predictor file: a checked JSON header, then a pickle.

Layout (one file, so the header cannot be separated from what it describes):

    MLWS-LATENCY-PREDICTOR\\n
    {"format_version": 1, "sklearn_version": ..., "schema": {...},
     "payload_sha256": ..., "payload_bytes": ..., ...}\\n
    <pickle payload>

`read_model_file` checks, in this order and *before* unpickling anything: the
magic line, the format version, the scikit-learn version (a forest pickled by
another version may load and silently predict garbage, or fail deep inside
sklearn), the caller's schema check, and the payload's length and SHA-256.

Security: a pickle runs code when it is loaded. The hash only detects
corruption and partial edits — whoever can write the payload can write the
header too — so load only predictor files you trained yourself or obtained
from a source you trust. As defence in depth (not a sandbox) the payload is
unpickled with an allow-list: scikit-learn classes and the few numpy helpers
that arrays and random states need; anything else is refused. Nothing here
looks for files: the caller names the path.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MLWS-LATENCY-PREDICTOR\n"
FORMAT_VERSION = 1
#: A header longer than this is not ours (and is not read into memory whole).
MAX_HEADER_BYTES = 1 << 20

# numpy internals that pickled arrays, scalars, dtypes and random states refer to.
_NUMPY_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
}


def sklearn_version() -> str:
    """The installed scikit-learn's version, read without importing it (a second or so)."""
    return version("scikit-learn")


class PredictorFileError(ValueError):
    """A predictor file that is not ours, is damaged, or does not fit this installation."""


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only scikit-learn classes and the numpy helpers listed above."""

    def find_class(self, module: str, name: str) -> Any:
        # Dotted names would let an allowed module reach anything it imports.
        if "." not in name:
            if (module, name) in _NUMPY_GLOBALS:
                return super().find_class(module, name)
            if module.startswith("sklearn."):
                obj = super().find_class(module, name)
                if isinstance(obj, type):
                    return obj
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a predictor file")


def write_model_file(path: str | Path, header: Mapping[str, Any], payload: Any) -> Path:
    """Write `payload` pickled after a JSON header that records its hash and versions."""
    path = Path(path)
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    full = {
        "format_version": FORMAT_VERSION,
        "sklearn_version": sklearn_version(),
        "numpy_version": np.__version__,
        **header,
        "payload_sha256": hashlib.sha256(body).hexdigest(),
        "payload_bytes": len(body),
    }
    line = json.dumps(full, sort_keys=True, allow_nan=False).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash mid-write never leaves a half file under the final name.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(MAGIC + line + b"\n" + body)
    tmp.replace(path)
    return path


def read_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The header of a predictor file and the offset of its payload; nothing is unpickled."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise PredictorFileError(f"{path}: not an mlws latency predictor file")
            line = fh.readline(MAX_HEADER_BYTES)
    except OSError as exc:
        raise PredictorFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not line.endswith(b"\n"):
        raise PredictorFileError(f"{path}: damaged predictor file (header not terminated)")
    try:
        header = json.loads(line)
    except ValueError:
        raise PredictorFileError(f"{path}: damaged predictor file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise PredictorFileError(f"{path}: damaged predictor file (header is not an object)")
    return header, len(MAGIC) + len(line)


def read_model_file(
    path: str | Path, check_header: Callable[[dict[str, Any]], str | None]
) -> tuple[dict[str, Any], Any]:
    """(header, payload) of a predictor file, after every check the module docstring lists.

    `check_header(header)` checks the caller's fields (feature schema, model
    type): None when they fit, else the reason they do not.
    """
    path = Path(path)
    header, offset = read_header(path)
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise PredictorFileError(
            f"{path}: predictor file format {version!r}; this mlws reads format {FORMAT_VERSION}"
        )
    saved = header.get("sklearn_version")
    if saved != sklearn_version():
        raise PredictorFileError(
            f"{path}: trained with scikit-learn {saved}, this environment has "
            f"{sklearn_version()}; retrain it (mlws predictor train)"
        )
    problem = check_header(header)
    if problem:
        raise PredictorFileError(f"{path}: {problem}; retrain it (mlws predictor train)")
    body = path.read_bytes()[offset:]
    if len(body) != header.get("payload_bytes") or (
        hashlib.sha256(body).hexdigest() != header.get("payload_sha256")
    ):
        raise PredictorFileError(
            f"{path}: payload does not match its header's SHA-256 (damaged or modified); "
            "not loading it"
        )
    try:
        payload = _AllowListUnpickler(io.BytesIO(body)).load()
    except pickle.UnpicklingError as exc:
        raise PredictorFileError(f"{path}: {exc}") from None
    return header, payload
