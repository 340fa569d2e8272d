"""The gateway's service-time models, one per lane group: trained or online, corrected online.

    predictor.path set    base = the trained LatencyPredictor at the group's
                          thread count (its mean; the scheduler plans with
                          predictor.quantile when one is set)
    predictor.path None   base = OnlineServiceTime, a line fitted to what the
                          group's lanes ran (calibration runs, then every dispatch)

Either way a `ResidualCorrection` multiplies the base by the exponentially
weighted observed ÷ predicted ratio of each (model, backend, precision,
batch-size bucket): drift and a predictor trained elsewhere are corrected from
live dispatches, and `GET /v1/predictor` shows where it stands. Groups learn
apart because their lanes differ (threads, OS priority: a low-priority lane's
service time includes the time it yielded to interactive work).

`ServiceTimes` owns them: every timed run (each dispatch, each calibration run)
is one `observe` call, which corrects the group's model, bumps its version (the
scheduler's memoised predictions and caps follow it) and exports the error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from predictor.online import OnlineServiceTime, ResidualCorrection, bucket_label, bucket_of
from server.config import GatewayConfig
from server.metrics import GatewayMetrics
from workloads.specs import WorkloadSpec


class ServiceTimes(Mapping[str, ResidualCorrection]):
    """The gateway's service times: per lane group name, its model corrected online.

    What the scheduler plans with (a mapping by group name) and the one place
    timed runs are learned from.
    """

    def __init__(
        self,
        models: Mapping[str, ResidualCorrection],
        metrics: GatewayMetrics | None = None,
        sizes: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self._models = dict(models)
        #: Where each observation's prediction error and residual are exported.
        self.metrics = metrics
        #: A trained predictor's model sizes (parameters, FLOPs per sample), by name.
        self._sizes = sizes

    def add_model(self, name: str, spec: WorkloadSpec) -> None:
        """A model served from now on (loaded at run time): a trained predictor times it
        by its size, unless it was trained on it (an online model learns it as it runs)."""
        if self._sizes is None or name in self._sizes:
            return
        if spec.param_count > 0 and spec.flops_per_sample > 0:
            self._sizes[name] = (float(spec.param_count), float(spec.flops_per_sample))

    def __getitem__(self, group: str) -> ResidualCorrection:
        return self._models[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def observe(self, group: str, key: tuple[str, str, str], samples: int, seconds: float) -> None:
        """One run of `samples` samples of `key` on a lane of lane group `group` took
        `seconds`: correct the group's model and export how wrong it was."""
        model = self._models[group]
        error = model.observe(*key, samples, seconds)
        residual = model.residual(*key, samples)
        if self.metrics is None or error is None or residual is None:
            return
        # Error of the (mean) prediction as it stood before this observation.
        workload, backend, precision = key
        self.metrics.set_prediction_error(workload, backend, group, error)
        label = bucket_label(bucket_of(samples))
        self.metrics.set_residual(workload, backend, precision, label, group, residual.ratio)


def load_service_models(
    config: GatewayConfig,
    specs: Mapping[str, WorkloadSpec],
    metrics: GatewayMetrics | None = None,
) -> ServiceTimes:
    """Per lane group name, the corrected service-time model `config.predictor` asks for,
    exporting what it learns to `metrics`.

    `specs` are the served models': a trained predictor times a model it never saw
    by its size, taken from here (a user's ONNX file is in no process-wide catalogue).

    Raises ValueError naming `predictor.path` for a missing, unreadable or
    incompatible model file, or a quantile it was not trained for.
    """
    settings = config.predictor
    groups = config.scheduler.groups()
    half_life = settings.correction_half_life
    if settings.path is None:
        online = {
            g.name: ResidualCorrection(OnlineServiceTime(), half_life=half_life) for g in groups
        }
        return ServiceTimes(online, metrics)
    from predictor.latency import LatencyPredictor

    path = Path(settings.path)
    if not path.is_file():
        raise ValueError(f"predictor.path: file not found: {path}")
    models = {}
    try:
        predictor = LatencyPredictor.load(path)
        for name, spec in specs.items():
            if name not in predictor.sizes and spec.param_count > 0 and spec.flops_per_sample > 0:
                predictor.sizes[name] = (float(spec.param_count), float(spec.flops_per_sample))
        for group in groups:
            threads = config.lanes.threads(group)
            # Its mean is the base; with predictor.quantile its plan is the trained quantile.
            base = predictor.as_service_model(threads=threads, quantile=settings.quantile)
            answer = base if settings.quantile is not None else None
            models[group.name] = ResidualCorrection(base, answer, half_life=half_life)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"predictor: {path}: {exc}") from None
    return ServiceTimes(models, metrics, predictor.sizes)


def describe(models: Mapping[str, ResidualCorrection], config: GatewayConfig) -> dict[str, Any]:
    """JSON-ready state of the models: the source and every observed bucket's residual."""
    settings = config.predictor
    buckets = []
    for group, model in models.items():
        for (workload, backend, precision, bucket), residual in sorted(model.residuals().items()):
            n = 1 << bucket  # the bucket's smallest batch: a concrete example prediction
            buckets.append(
                {
                    "lane_group": group,
                    "model": workload,
                    "backend": backend,
                    "precision": precision,
                    "batch_bucket": bucket_label(bucket),
                    "observations": residual.count,
                    "residual_ratio": residual.ratio,
                    "plan_excess_ratio": math.exp(residual.excess()),
                    "example_batch": n,
                    "base_ms": model.reference.predict(workload, backend, precision, n) * 1e3,
                    "corrected_ms": model.predict(workload, backend, precision, n) * 1e3,
                    "plan_ms": model.plan(workload, backend, precision, n) * 1e3,
                }
            )
    return {
        "source": "trained" if settings.path else "online",
        "path": settings.path,
        "quantile": settings.quantile,
        "correction_half_life": settings.correction_half_life,
        "buckets": buckets,
    }
