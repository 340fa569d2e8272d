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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from predictor.online import OnlineServiceTime, ResidualCorrection, bucket_label
from server.config import GatewayConfig


def load_service_models(config: GatewayConfig) -> dict[str, ResidualCorrection]:
    """Per lane group name, the corrected service-time model `config.predictor` asks for.

    Raises ValueError naming `predictor.path` for a missing, unreadable or
    incompatible model file, or a quantile it was not trained for.
    """
    settings = config.predictor
    groups = config.scheduler.groups()
    half_life = settings.correction_half_life
    if settings.path is None:
        return {
            g.name: ResidualCorrection(OnlineServiceTime(), half_life=half_life) for g in groups
        }
    from predictor.latency import LatencyPredictor

    path = Path(settings.path)
    if not path.is_file():
        raise ValueError(f"predictor.path: file not found: {path}")
    models = {}
    try:
        predictor = LatencyPredictor.load(path)
        for group in groups:
            threads = config.lanes.threads(group)
            mean = predictor.as_service_model(threads=threads)
            answer = None
            if settings.quantile is not None:
                answer = predictor.as_service_model(threads=threads, quantile=settings.quantile)
            models[group.name] = ResidualCorrection(mean, answer, half_life=half_life)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"predictor: {path}: {exc}") from None
    return models


def describe(models: dict[str, ResidualCorrection], config: GatewayConfig) -> dict[str, Any]:
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
