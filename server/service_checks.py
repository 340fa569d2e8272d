"""Before any lane starts: can every lane group's service-time model time every model?

A trained predictor describes a model by its size, so a model it never saw needs
a parameter count and FLOPs per sample; without them its first prediction raises
deep inside calibration. Asking each model once per served (model, backend,
precision) turns that into a refusal at start that names the model and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from predictor.online import ResidualCorrection
from server.config import GatewayConfig, ModelConfig
from workloads.specs import WorkloadSpec


def check_service_models(
    config: GatewayConfig,
    specs: Mapping[str, WorkloadSpec],
    models: Mapping[str, ResidualCorrection],
) -> None:
    """ValueError (one line) if some lane group's model cannot predict a served model.

    `specs` must be registered in the workload catalogue (the predictor looks a
    model's size up there).
    """
    for i, model in enumerate(config.models):
        for backend in model.backends:
            for precision in model.precisions:
                for group, service in models.items():
                    try:
                        service.predict(model.name, backend, precision, 1)
                        service.plan(model.name, backend, precision, 1)
                    except (ValueError, KeyError) as exc:
                        why = " ".join(str(exc).split())
                        raise ValueError(
                            _problem(i, model, specs[model.name])
                            or f"predictor: lane group {group!r} cannot time model "
                            f"{model.name!r} on {backend}/{precision}: {why}"
                        ) from None


def _problem(index: int, model: ModelConfig, spec: WorkloadSpec) -> str | None:
    """The message for a model the predictor cannot size, None for any other failure."""
    if spec.param_count > 0 and spec.flops_per_sample > 0:
        return None
    where = f"models.{index} ({model.name!r})"
    sized = "the predictor (predictor.path) times a model it was not trained on by its size"
    online = "leave predictor.path out to learn its service times online"
    source = model.onnx_file or "the model"
    if spec.param_count <= 0:
        return f"{where}: {sized}, but {source} has no weights to size it by; {online}"
    return (
        f"{where}: {sized}, but the FLOPs per sample of {source} could not be estimated "
        "from its graph (from Conv, Gemm and MatMul nodes with inferable shapes); add "
        f"flops_per_sample: <FLOPs of one sample> to models.{index}, or {online}"
    )
