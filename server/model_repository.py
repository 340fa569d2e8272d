"""Models loaded, replaced and unloaded at run time: what the Open Inference Protocol's
model repository extension does to a running gateway (its routes: server/repository.py).

Load (Triton's is synchronous: it answers once the model serves, or with why not):

1. The config is checked: this project's model keys (backends, precisions, weights,
   onnx_file, flops_per_sample), and every file path confined to the model directory
   before anything is opened (server/model_paths.py).
2. A model not served yet is marked `loading` (its requests get 503 saying so); a
   served one keeps serving its current version while the new one loads.
3. The service-time models must time it, the scheduling core learns its token cost,
   an in-tree model is exported to ONNX, and every lane loads and warms it
   (`LaneWorkers.load`, on each lane's own worker, between dispatches); under a
   lane budget only the lanes with room for it, the others load it on demand.
4. Each lane group's service-time model is calibrated on it, as at start-up.
5. The catalogue serves it (`ServedModels.add` / `replace`): ready.

A failed step undoes the ones before (a replaced model's old version is reloaded on
the lanes that had switched) and the load answers 400 with the reason; the model's
index entry says UNAVAILABLE with it, or READY with it while an old version serves.

Unload: the model is marked `unloading` at once (new requests get 503 saying so),
its queued and running requests finish (`ServedModels.idle`), then it leaves the
catalogue (404 from then on), the scheduling core forgets it and the lanes release
its runners. One change runs at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduling.config_errors import ConfigError, validate
from server.catalogue import ServedModel
from server.config import ModelConfig
from server.errors import GatewayError, Unavailable
from server.lanes.base import LaneBatch, LaneError, RunnerSpec
from server.lanes.build import model_runners
from server.lanes.export import export_models
from server.model_paths import confine
from server.service_checks import check_service_models
from server.startup import CALIBRATION_RUNS
from workloads.registry import get_workload, onnx_file_workload

if TYPE_CHECKING:
    from server.gateway import Gateway

log = logging.getLogger("mlws.server")

#: The model version every served model has (the protocol's versions are strings).
VERSION = "1"


class RepositoryRefused(GatewayError):
    """A load the gateway will not attempt (bad config), or one that failed."""

    status, code = 400, "invalid_input"


@dataclass(frozen=True)
class ModelStatus:
    """One entry of the repository index."""

    name: str
    state: str
    reason: str = ""
    version: str = VERSION

    def as_dict(self) -> dict[str, str]:
        """The index entry as the protocol spells it."""
        return dataclasses.asdict(self)


class ModelRepository:
    """The models of one gateway that came and went at run time (app.state.repository),
    and the one change in progress."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        #: Why the last load of a model that is not served failed.
        self.failed: dict[str, str] = {}
        #: Models unloaded (and not loaded again since).
        self.unloaded: set[str] = set()
        self._lock = asyncio.Lock()

    def index(self, ready_only: bool = False) -> list[ModelStatus]:
        """Every model the gateway serves or has known; READY ones only if asked."""
        gw = self.gw
        served = gw.models.names()
        out = [_status(gw, name, self.failed.get(name)) for name in served]
        changing = gw.models.changing()
        out += [ModelStatus(n, "LOADING") for n in changing if n not in served]
        for name in sorted((self.unloaded | set(self.failed)) - set(served) - set(changing)):
            out.append(ModelStatus(name, "UNAVAILABLE", self.failed.get(name, "unloaded")))
        return [s for s in out if s.state == "READY"] if ready_only else out

    async def load(self, name: str, config_text: str | None) -> None:
        """Load (or replace) model `name`; returns once it serves. RepositoryRefused (400)
        naming the problem for a bad config or a failed load, Unavailable before start-up
        has finished."""
        gw = self.gw
        if gw.phase != "ready" or not gw.accepting:
            raise Unavailable(f"models cannot be loaded now: {gw.not_ready_reason()}")
        model = model_config(gw, name, config_text)
        if model is None:
            return  # served, and no new config: nothing to do (a model is loaded once)
        await self.load_model(model)

    async def load_model(self, model: ModelConfig) -> None:
        """Load (or replace) `model` as it is: its paths are not confined (the operator's
        own config file, server/config_reload.py). RepositoryRefused if it failed (an old
        version keeps serving), Unavailable before start-up has finished."""
        gw = self.gw
        if gw.phase != "ready" or not gw.accepting:
            raise Unavailable(f"models cannot be loaded now: {gw.not_ready_reason()}")
        if gw.scheduler.lane_budget is not None and gw.models.get(model.name) is not None:
            raise RepositoryRefused(
                f"model {model.name!r} is served: under a lane budget (scheduler.tokens."
                "lane_budget) a new version cannot replace it in place; unload it, then load "
                "the new one"
            )
        async with self._lock:
            await self._load(model)

    async def unload(self, name: str) -> None:
        """Unload model `name` once its requests have finished; UnknownModel (404) for a
        model the gateway never had."""
        models = self.gw.models
        if models.get(name) is not None and models.state(name) is None:
            models.mark(name, "unloading")  # at once: new requests are refused from now
        async with self._lock:
            if models.get(name) is None:
                if name in self.unloaded or name in self.failed:
                    return  # unavailable already
                models.require(name)  # 404 naming the served models
            models.mark(name, "unloading")
            await models.idle(name)
            models.remove(name)
            self.gw.scheduler.forget_workload(name)
            models.mark(name, None)
            self.unloaded.add(name)
            self.failed.pop(name, None)  # a failed replace's reason no longer applies
            keys = tuple(r.key for r in self.gw.pool.runners if r.name == name)
            await self.gw.pool.unload(keys)
        log.info("unloaded model %s", name)

    async def _load(self, model: ModelConfig) -> None:
        gw, name = self.gw, model.name
        old = gw.models.get(name)
        previous = tuple(r for r in gw.pool.runners if r.name == name)
        gw.models.mark(name, "loading")
        log.info("loading model %s (%s)", name, "a new version" if old else "new")
        try:
            served, runners = await _load_on_lanes(gw, model, previous)
        except Exception as exc:
            if old is not None:
                gw.scheduler.set_workload(name, old.spec.token_base)
            else:
                gw.scheduler.forget_workload(name)
            gw.models.mark(name, None)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            self.failed[name] = reason
            log.error("loading model %s failed: %s", name, reason)
            kept = "; the old version keeps serving" if old is not None else ""
            raise RepositoryRefused(f"failed to load model {name!r}: {reason}{kept}") from None
        await _calibrate(gw, served)
        if old is None:
            gw.models.add(served)
            gw.metrics.register_model(name)
        else:
            gw.models.replace(served)
        gw.models.mark(name, None)
        self.failed.pop(name, None)
        self.unloaded.discard(name)
        log.info("model %s ready", name)
        dropped = tuple({r.key for r in previous} - {r.key for r in runners})
        if dropped:  # backends or precisions the new version no longer has
            await gw.pool.unload(dropped)


def _status(gw: Gateway, name: str, failed: str | None = None) -> ModelStatus:
    state = gw.models.state(name)
    if state == "unloading":
        return ModelStatus(name, "UNLOADING", "its requests are finishing")
    if gw.phase == "failed":
        return ModelStatus(name, "UNAVAILABLE", gw.error or "start-up failed")
    if gw.phase != "ready":
        return ModelStatus(name, "LOADING", f"start-up: {gw.phase}")
    if state == "loading":
        return ModelStatus(name, "READY", "a new version is loading; this one serves")
    if failed is not None:  # a replace failed: say why beside the version that serves
        return ModelStatus(
            name, "READY", f"a new version failed to load: {failed}; this one serves"
        )
    return ModelStatus(name, "READY")


def model_config(gw: Gateway, name: str, config_text: str | None) -> ModelConfig | None:
    """The ModelConfig a load asks for (paths confined to the model directory, nothing
    opened); None: the model is served and no config came (nothing to do)."""
    if config_text is None:
        if gw.models.get(name) is not None:
            return None
        configured = next((m for m in gw.config.models if m.name == name), None)
        if configured is not None:
            return configured  # the operator's own file: its paths are trusted
        data: dict[str, Any] = {}
    else:
        data = _parse_config(config_text)
        if data.get("name", name) != name:
            raise RepositoryRefused(
                f"config: name {data['name']!r} differs from the model loaded ({name!r})",
                field="name",
            )
    try:
        model: ModelConfig = validate(ModelConfig, {**data, "name": name}, "config")
    except ConfigError as exc:
        raise RepositoryRefused("; ".join(str(exc).splitlines())) from None
    paths = {
        key: confine(value, gw.config.model_dir, key)
        for key, value in (("onnx_file", model.onnx_file), ("weights", model.weights))
        if value is not None
    }
    return model.model_copy(update=paths)


def _parse_config(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RepositoryRefused(f"parameters.config is not JSON: {exc}", field="config") from None
    if not isinstance(data, dict):
        raise RepositoryRefused("parameters.config must be a JSON object", field="config")
    return data


async def _load_on_lanes(
    gw: Gateway, model: ModelConfig, previous: tuple[RunnerSpec, ...]
) -> tuple[ServedModel, tuple[RunnerSpec, ...]]:
    """Steps 3 of the module docstring: the served model and its runners, on every lane."""
    served = ServedModel(model, await asyncio.to_thread(_workload, model))
    gw.dispatcher.service_times.add_model(model.name, served.spec)
    one = gw.config.model_copy(update={"models": (model,)})
    check_service_models(one, {model.name: served.spec}, gw.dispatcher.service_times)
    gw.scheduler.set_workload(model.name, served.spec.token_base)
    await asyncio.to_thread(export_models, one, {model.name: served.workload})
    runners = model_runners(model, served.workload, gw.scheduler)
    # Under a lane budget: the lanes with room now; the others load it on demand.
    only = gw.scheduler.room_for([r.key for r in runners], gw.dispatcher.clock())
    await gw.pool.load(runners, previous, only)
    return served, runners


def _workload(model: ModelConfig) -> Any:
    if model.onnx_file is None:
        return get_workload(model.name)
    return onnx_file_workload(model.onnx_file, model.name, flops_per_sample=model.flops_per_sample)


async def _calibrate(gw: Gateway, served: ServedModel) -> None:
    """Timed runs of the new model on each lane group's first live lane, learned by the
    group's service-time model (as start-up's calibration). The core does not book these
    runs: on a lane running a dispatch they queue behind it on the lane's worker."""
    model = served.config
    for group in gw.config.scheduler.groups():
        lane = next(
            (
                x
                for x in gw.pool.live()
                if x.spec.group == group.name and any(r.name == model.name for r in x.spec.runners)
            ),
            None,
        )
        if lane is None:
            continue  # none holds it (lane budgets): its dispatches teach the group
        for backend in model.backends:
            for precision in model.precisions:
                key = (model.name, backend, precision)
                cap = gw.scheduler.largest_dispatch(model.name, precision)
                for n in sorted({1, cap}):
                    await _timed_runs(gw, group.name, lane.index, key, n)


async def _timed_runs(
    gw: Gateway, group: str, lane: int, key: tuple[str, str, str], n: int
) -> None:
    """CALIBRATION_RUNS runs of `key` at batch `n`, learned; a failure only logged (the
    model serves anyway, and its service times are learned from its dispatches)."""
    try:
        for _ in range(CALIBRATION_RUNS):
            result = await gw.pool.run(lane, LaneBatch(-1, key, [(None, 0, n)]))
            gw.dispatcher.service_times.observe(group, key, n, result.service_s)
    except LaneError as exc:
        log.warning("calibrating %s at batch %d on lane %d failed: %s", "/".join(key), n, lane, exc)
