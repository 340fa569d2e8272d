"""Memory-token model: a dispatch costs its model's base plus its samples' share.

One token is one MiB. A model's cost at a precision is measured where it was
profiled (`mlws profile`: resident MiB, MiB per sample) and the hand-set table
otherwise: base + 4 per sample, × 0.7 at fp16, base from the model's spec
(ResNet-18 80, ResNet-50 160, ViT-B/16 260, tiny 10). The formula lives here, in
the pure core, so the simulator, the live gateway and the workload catalogue all
charge the same price; reading a profile is the callers' business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scheduling.errors import UnknownWorkload

TOKENS_PER_SAMPLE = 4
FP16_FACTOR = 0.7
#: Where a cost from the hand-set table says it came from.
TABLE = "table"


@dataclass(frozen=True)
class TokenCost:
    """What a dispatch of one model at one precision holds while it runs."""

    #: Tokens (MiB) held whatever the batch: weights and the runtime's arena.
    base: float
    #: Tokens (MiB) each sample adds: activations, input and output.
    per_sample: float
    #: "table", or "profile <file>" for measured figures.
    source: str = TABLE

    def tokens(self, samples: int) -> int:
        """Tokens of a dispatch of `samples` samples, rounded up so that the pool can
        never be over-committed by rounding."""
        return math.ceil(self.base + self.per_sample * samples - 1e-9)


def table_cost(base: int, precision: str = "fp32") -> TokenCost:
    """The hand-set cost of a model with token base `base`: base + 4 × samples, × 0.7
    at fp16."""
    factor = FP16_FACTOR if precision == "fp16" else 1.0
    return TokenCost(base * factor, TOKENS_PER_SAMPLE * factor)


def token_cost(base: int, samples: int, precision: str = "fp32") -> int:
    """Tokens a dispatch of `samples` samples holds at the hand-set cost of `base`."""
    return table_cost(base, precision).tokens(samples)


class TokenCosts:
    """Per served model and precision, its cost: measured where given, else the table."""

    def __init__(
        self,
        bases: Mapping[str, int],
        measured: Mapping[tuple[str, str], TokenCost] | None = None,
    ) -> None:
        self._bases = dict(bases)
        self._measured = dict(measured or {})

    def cost(self, workload: str, precision: str) -> TokenCost:
        """The cost of `workload` at `precision`; UnknownWorkload if it is not served."""
        base = self._bases.get(workload)
        if base is None:
            raise UnknownWorkload(workload, sorted(self._bases))
        return self._measured.get((workload, precision)) or table_cost(base, precision)

    def tokens(self, workload: str, samples: int, precision: str) -> int:
        """Tokens of a dispatch of `samples` samples of `workload` at `precision`."""
        return self.cost(workload, precision).tokens(samples)

    def set_base(self, workload: str, base: int) -> None:
        """Serve `workload` with hand-set base `base` (a model loaded at run time); a
        measured cost of its name still comes first."""
        self._bases[workload] = base

    def remove(self, workload: str) -> None:
        """`workload` is no longer served: its cost is unknown from now on."""
        self._bases.pop(workload, None)

    def names(self) -> list[str]:
        """The models with a cost, sorted."""
        return sorted(self._bases)


def max_samples_within(cost: TokenCost, capacity: int, limit: int) -> int:
    """Largest sample count up to `limit` whose dispatch fits `capacity` tokens (0 if
    none: a measured per-sample cost may be below one token, so `limit` bounds it)."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost.tokens(mid) <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo
