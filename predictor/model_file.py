"""The saved-predictor file: a checked JSON header, then numbers only.

Layout (one file, so the header cannot be separated from what it describes):

    MLWS-LATENCY-PREDICTOR\\n
    {"format_version": 2, "schema": {...}, "payload_sha256": ..., "payload_bytes": ...,
     ...}\\n
    <.npz archive of plain numeric arrays>

Nothing in the file can run code: the header is JSON, the payload a NumPy
archive read with `allow_pickle=False` (an object array in it is refused), and
the fitted trees are arrays that `predictor.trees` evaluates. A crafted file can
at worst predict nonsense, and the tree arrays are checked for shape on load so
that it cannot even do that by indexing out of bounds.

`read_model_file` checks, in this order: the magic line, the format version (a
format-1 file, which held a pickle, is refused with how to retrain), the
caller's schema check, the payload's length and SHA-256 (corruption and partial
copies), then the archive itself. Nothing here looks for files: the caller
names the path.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MLWS-LATENCY-PREDICTOR\n"
FORMAT_VERSION = 2
#: A header longer than this is not ours (and is not read into memory whole).
MAX_HEADER_BYTES = 1 << 20
#: How to make a file this version reads, for every refusal that calls for it.
RETRAIN = "retrain it: mlws predictor train --profiles PROFILE.csv --out FILE"


class PredictorFileError(ValueError):
    """A predictor file that is not ours, is damaged, or does not fit this installation."""


def write_model_file(
    path: str | Path, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> Path:
    """Write numeric `arrays` after a JSON header that records their hash."""
    path = Path(path)
    buffer = io.BytesIO()
    for name, array in arrays.items():
        if np.asarray(array).dtype.kind not in "biuf":
            raise TypeError(f"array {name!r} is not numeric ({np.asarray(array).dtype})")
    np.savez(buffer, **{name: np.asarray(a) for name, a in arrays.items()})
    body = buffer.getvalue()
    full = {
        "format_version": FORMAT_VERSION,
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
    """The header of a predictor file and the offset of its payload; the payload is not read."""
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
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a predictor file, after every check the module docstring lists.

    `check_header(header)` checks the caller's fields (feature schema, model
    type): None when they fit, else the reason they do not.
    """
    path = Path(path)
    header, offset = read_header(path)
    version = header.get("format_version")
    if version == 1:
        raise PredictorFileError(
            f"{path}: predictor file format 1 stores a Python pickle, which can run code "
            f"when loaded; this mlws reads only format {FORMAT_VERSION} (numbers only). "
            f"Not loading it; {RETRAIN}"
        )
    if version != FORMAT_VERSION:
        raise PredictorFileError(
            f"{path}: predictor file format {version!r}; this mlws reads format "
            f"{FORMAT_VERSION}; {RETRAIN}"
        )
    problem = check_header(header)
    if problem:
        raise PredictorFileError(f"{path}: {problem}; {RETRAIN}")
    body = path.read_bytes()[offset:]
    if len(body) != header.get("payload_bytes") or (
        hashlib.sha256(body).hexdigest() != header.get("payload_sha256")
    ):
        raise PredictorFileError(
            f"{path}: payload does not match its header's SHA-256 (damaged or modified); "
            "not loading it"
        )
    return header, _read_arrays(path, body)


def _read_arrays(path: Path, body: bytes) -> dict[str, np.ndarray]:
    """Every array of the archive, numeric only; never unpickles anything."""
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:  # numpy's refusal of an object array names allow_pickle
        raise PredictorFileError(
            f"{path}: the payload holds a Python object ({exc}); not loading it"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PredictorFileError(f"{path}: damaged predictor file (payload: {exc})") from None
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise PredictorFileError(
                f"{path}: array {name!r} is {array.dtype}, not numeric; not loading it"
            )
    return arrays
