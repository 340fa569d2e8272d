"""Apply a changed config file to a running gateway, without a restart: what SIGHUP
(server/serve.py) and POST /v1/config/reload (server/operations.py) do.

The file the gateway was started from (`mlws serve --config FILE`, with the command
line's overrides) is read and validated again, then compared with the config the
gateway runs:

- Only `models` may differ. Any other change (lanes, scheduler, ports, ...) refuses
  the whole reload, naming each dotted key that needs a restart; nothing changes.
- A model the file no longer lists is unloaded (its queued and running requests
  finish first); one it newly lists is loaded; one whose entry changed (backends,
  precisions, weights, onnx_file, ...) or whose weights/ONNX file changed on disk is
  replaced: the old version serves until the new one is ready on every lane.
- Each change is the model repository's (server/model_repository.py): one at a time,
  and a failed load leaves the old version serving; the reason is logged, shown in
  the repository index and in the reload's report. The other models' changes still
  apply, and the next reload tries the failed ones again (the file is what should
  serve).

Models loaded through the repository API that the file never listed are left alone.
The paths in the file are the operator's own, as at start-up: not confined to
`model_dir`. One reload runs at a time; a second waits, then reads the file anew.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from scheduling.config_errors import ConfigError
from server.config import ConfigFile, GatewayConfig, ModelConfig
from server.errors import GatewayError, Unavailable
from server.gateway import with_device_capacity
from server.schemas import ErrorBody

if TYPE_CHECKING:
    from server.gateway import Gateway
    from server.model_repository import ModelRepository

log = logging.getLogger("mlws.server")

#: A model's files as last loaded: (path, size, modification time in ns) each.
Fingerprint = tuple[tuple[str, int, int], ...]


class NoConfigFile(GatewayError):
    """The gateway was started from the embedded default: there is no file to read."""

    status, code = 409, "conflict"


class RestartNeeded(GatewayError):
    """The file changes keys other than `models`: only a restart applies those."""

    status, code = 409, "conflict"


class InvalidConfigFile(GatewayError):
    """The file cannot be read or is not a valid gateway config."""

    status, code = 400, "invalid_input"


class ReloadReport(BaseModel):
    """What a reload did, model by model."""

    file: str = Field(description="The config file read.")
    added: list[str] = Field(default_factory=list, description="Models loaded.")
    removed: list[str] = Field(default_factory=list, description="Models unloaded.")
    replaced: list[str] = Field(
        default_factory=list, description="Models whose new version serves now."
    )
    unchanged: list[str] = Field(default_factory=list, description="Models left as they were.")
    failed: dict[str, str] = Field(
        default_factory=dict,
        description="Model → why its change failed (an old version keeps serving).",
    )

    def summary(self) -> str:
        """One line for the log."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("replaced", self.replaced),
                ("unchanged", self.unchanged),
            )
            if names
        ]
        parts += [f"FAILED {name}: {why}" for name, why in self.failed.items()]
        return f"{self.file}: " + ("; ".join(parts) or "no models")


class ReloadErrorBody(ErrorBody):
    """A refused or partly failed reload's answer."""

    report: ReloadReport | None = Field(
        None, description="When the reload ran: what it did, and why each failed change failed."
    )


class ReloadFailed(GatewayError):
    """A reload ran, and one model's change or more failed (see `report`)."""

    status, code = 400, "invalid_input"

    def __init__(self, report: ReloadReport) -> None:
        failed = "; ".join(f"{name}: {why}" for name, why in report.failed.items())
        super().__init__(f"{len(report.failed)} model change(s) failed: {failed}", field="models")
        self.report = report


class ConfigReloader:
    """The gateway's config file and its reloads (app.state.reloader)."""

    def __init__(
        self, gw: Gateway, repository: ModelRepository, config_file: ConfigFile | None
    ) -> None:
        self.gw = gw
        self.repository = repository
        self.config_file = config_file
        self._lock = asyncio.Lock()
        #: Model → its files when it was last loaded from the config, to see them change.
        self._files: dict[str, Fingerprint] = {m.name: fingerprint(m) for m in gw.config.models}

    async def reload(self) -> ReloadReport:
        """Read the file again and apply its models; the report. NoConfigFile,
        InvalidConfigFile, RestartNeeded (nothing changed), Unavailable (starting or
        shutting down), ReloadFailed (the report) if a model's change failed."""
        if self.config_file is None:
            raise NoConfigFile(
                "the gateway was started without a config file (the embedded default): "
                "there is nothing to reload; start it with `mlws serve --config FILE`"
            )
        async with self._lock:
            self._check_accepting()
            new = await asyncio.to_thread(read_config, self.config_file)
            keys = changed_keys(self.gw.config, new)
            if keys:
                raise RestartNeeded(
                    f"{self.config_file.path}: {', '.join(keys)} changed; only models change "
                    "without a restart: restart the gateway to apply the rest (nothing was "
                    "changed)",
                    field=keys[0],
                )
            report = await self._apply(new)
        if report.failed:
            raise ReloadFailed(report)
        return report

    async def reload_logged(self) -> None:
        """A reload whose outcome only goes to the log (SIGHUP has nobody to answer)."""
        try:
            report = await self.reload()
        except ReloadFailed as exc:
            log.error("config reload from %s", exc.report.summary())
        except GatewayError as exc:
            log.error("config reload refused: %s", exc)
        except Exception:
            log.exception("config reload failed")
        else:
            log.info("config reload from %s", report.summary())

    def _check_accepting(self) -> None:
        gw = self.gw
        if gw.phase != "ready" or not gw.accepting:
            raise Unavailable(f"the config cannot be reloaded now: {gw.not_ready_reason()}")

    async def _apply(self, new: GatewayConfig) -> ReloadReport:
        """Unload the models gone, replace the changed ones, load the new ones; then the
        gateway runs `new` (failed models included: a later reload retries them)."""
        assert self.config_file is not None
        gw, report = self.gw, ReloadReport(file=self.config_file.path)
        wanted = {m.name: m for m in new.models}
        files = await asyncio.to_thread(lambda: {m.name: fingerprint(m) for m in new.models})
        for name in [m.name for m in gw.config.models if m.name not in wanted]:
            if gw.models.get(name) is None and gw.models.state(name) is None:
                continue  # not served (unloaded through the API, or its load failed)
            await self._change(report.removed, report, name, self.repository.unload(name))
            self._files.pop(name, None)
        for model in new.models:
            served = gw.models.get(model.name)
            same = served is not None and served.config == model
            # Its files as last loaded (a model the API loaded: as they are now).
            if same and self._files.setdefault(model.name, files[model.name]) == files[model.name]:
                report.unchanged.append(model.name)
                continue
            done = report.added if served is None else report.replaced
            if await self._change(done, report, model.name, self.repository.load_model(model)):
                self._files[model.name] = files[model.name]
        gw.config = new
        return report

    async def _change(
        self, done: list[str], report: ReloadReport, name: str, step: Awaitable[None]
    ) -> bool:
        """Await one model's change: its name in `done`, or in report.failed with why."""
        try:
            await step
        except GatewayError as exc:
            report.failed[name] = str(exc)
            return False
        done.append(name)
        return True


def read_config(config_file: ConfigFile) -> GatewayConfig:
    """The file's config as the gateway would run it now: with what start-up derives from
    the machine (the token capacity from a CUDA device), so that only the file's own
    changes differ from the running config."""
    try:
        return with_device_capacity(config_file.read())
    except ConfigError as exc:
        raise InvalidConfigFile("; ".join(str(exc).splitlines())) from None


def changed_keys(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The dotted keys, other than `models`, whose values differ between two configs."""
    return _diff(old.model_dump(exclude={"models"}), new.model_dump(exclude={"models"}), "")


def _diff(old: Any, new: Any, key: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))
        return out
    return [] if old == new else [key]


def fingerprint(model: ModelConfig) -> Fingerprint:
    """Size and modification time of the model's weights and ONNX files (a file that
    cannot be read counts as size and time -1: its load will say why)."""
    out = []
    for path in (model.weights, model.onnx_file):
        if path is None:
            continue
        try:
            st = Path(path).stat()
            out.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, -1, -1))
    return tuple(out)
