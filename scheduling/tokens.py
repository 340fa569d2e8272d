"""Memory-token model: a dispatch costs its model's base plus activations.

The formula lives here, in the pure core, so the simulator, the live gateway
and the workload catalogue all charge the same price.
"""

from __future__ import annotations

import math

TOKENS_PER_SAMPLE = 4
FP16_FACTOR = 0.7


def token_cost(base: int, samples: int, precision: str = "fp32") -> int:
    """Tokens a dispatch of `samples` samples holds while it runs.

    base + 4 × samples, × 0.7 at fp16, rounded up so that the pool can never be
    over-committed by rounding.
    """
    raw = base + TOKENS_PER_SAMPLE * samples
    if precision == "fp16":
        raw *= FP16_FACTOR
    return math.ceil(raw - 1e-9)


def max_samples_within(base: int, precision: str, capacity: int) -> int:
    """Largest sample count whose dispatch fits `capacity` tokens (0 if none)."""
    lo, hi = 0, capacity  # each sample costs at least one token, so hi is an upper bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if token_cost(base, mid, precision) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo
