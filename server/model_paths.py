"""Paths a model loaded at run time names, confined to the configured model directory.

A load request (POST /v2/repository/models/{name}/load) comes from the network: the
`onnx_file` or `weights` path in its config must name a regular file inside
`model_dir`, or the request is refused before anything is opened. The check works on
names and metadata only: the path is resolved (`..`, symlinks) by `os.path.realpath`
and looked at by `os.stat`, neither of which reads a byte of the file, so a path
outside the directory, a device or a FIFO is refused without being read (a FIFO
would block whoever opens it). A relative path is taken from the model directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from server.echo import echo
from server.errors import GatewayError


class ModelPathRefused(GatewayError):
    """A model file path the gateway will not open (outside the model directory, missing,
    not a regular file)."""

    status, code = 400, "invalid_input"


def confine(value: str, model_dir: str, field: str) -> str:
    """The real path of the regular file `value` names inside `model_dir`; refused with
    ModelPathRefused (400, naming `field` and why) otherwise."""
    if "\0" in value or not value.strip():
        raise ModelPathRefused(f"{field}: not a usable path: {echo(value)}", field=field)
    root = Path(os.path.realpath(model_dir))
    raw = Path(value)
    resolved = Path(os.path.realpath(raw if raw.is_absolute() else root / raw))
    if not resolved.is_relative_to(root):
        raise ModelPathRefused(
            f"{field}: {echo(value)} is outside the model directory ({model_dir}); "
            "only files inside it can be loaded",
            field=field,
        )
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ModelPathRefused(
            f"{field}: {echo(value)} in the model directory: {why}", field=field
        ) from None
    if not stat.S_ISREG(mode):
        raise ModelPathRefused(f"{field}: {echo(value)} is not a regular file", field=field)
    return str(resolved)
