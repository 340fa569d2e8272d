"""Plugins: modules a config names, imported before the names they register are checked.

A plugin module registers what it adds when imported, e.g. a backend with
`backends.registry.register_backend("tensorrt", TensorRtBackend)`. The gateway
imports a config's plugins while validating it (so `models[].backends` may name
the new backend), and every lane worker process imports them again before it
loads its runners: a spawned process starts with none of its parent's imports.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

#: A dotted module name: what `plugins:` entries must look like.
MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class PluginError(ImportError):
    """A plugin module could not be imported; the message names it and says why."""


def import_plugins(names: Iterable[str]) -> None:
    """Import each named module (a no-op for one already imported).

    Raises PluginError naming the module and the cause; a module that is not
    found is told apart from one whose own code failed.
    """
    for name in names:
        if not re.fullmatch(MODULE_NAME, name):
            raise PluginError(f"{name!r} is not a module name (e.g. my_pkg.my_backend)")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise PluginError(
                    f"no module named {name!r} (is its directory on PYTHONPATH?)"
                ) from None
            raise PluginError(f"{name}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            # Any failure of the plugin's own code: shown with its type, not hidden.
            raise PluginError(f"{name}: {type(exc).__name__}: {exc}") from exc
