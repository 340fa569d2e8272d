"""The gateway's service-time model: a trained predictor or an online fit, corrected online.

    predictor.path set    base = the trained LatencyPredictor at the lanes'
                          thread count (its mean; the scheduler is answered
                          with predictor.quantile when one is set)
    predictor.path None   base = OnlineServiceTime, a line fitted to what the
                          lanes ran (calibration runs, then every dispatch)

Either way a `ResidualCorrection` multiplies the base by the exponentially
weighted observed ÷ predicted ratio of each (model, backend, precision,
batch-size bucket): drift and a predictor trained elsewhere are corrected from
live dispatches, and `GET /v1/predictor` shows where it stands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predictor.online import OnlineServiceTime, ResidualCorrection, bucket_label
from server.config import GatewayConfig


def load_service_model(config: GatewayConfig) -> ResidualCorrection:
    """The corrected service-time model `config.predictor` asks for.

    Raises ValueError naming `predictor.path` for a missing, unreadable or
    incompatible model file, or a quantile it was not trained for.
    """
    settings = config.predictor
    if settings.path is None:
        return ResidualCorrection(OnlineServiceTime(), half_life=settings.correction_half_life)
    from predictor.latency import LatencyPredictor

    path = Path(settings.path)
    if not path.is_file():
        raise ValueError(f"predictor.path: file not found: {path}")
    try:
        predictor = LatencyPredictor.load(path)
        threads = config.lanes.threads()
        mean = predictor.as_service_model(threads=threads)
        answer = None
        if settings.quantile is not None:
            answer = predictor.as_service_model(threads=threads, quantile=settings.quantile)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"predictor: {path}: {exc}") from None
    return ResidualCorrection(mean, answer, half_life=settings.correction_half_life)


def describe(model: ResidualCorrection, config: GatewayConfig) -> dict[str, Any]:
    """JSON-ready state of the model: its source and every observed bucket's residual."""
    settings = config.predictor
    buckets = []
    for (workload, backend, precision, bucket), residual in sorted(model.residuals().items()):
        n = 1 << bucket  # the bucket's smallest batch: a concrete example prediction
        base = model.reference.predict(workload, backend, precision, n)
        buckets.append(
            {
                "model": workload,
                "backend": backend,
                "precision": precision,
                "batch_bucket": bucket_label(bucket),
                "observations": residual.count,
                "residual_ratio": residual.ratio,
                "example_batch": n,
                "base_ms": base * 1e3,
                "corrected_ms": model.predict(workload, backend, precision, n) * 1e3,
            }
        )
    return {
        "source": "trained" if settings.path else "online",
        "path": settings.path,
        "quantile": settings.quantile,
        "correction_half_life": settings.correction_half_life,
        "buckets": buckets,
    }
