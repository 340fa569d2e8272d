"""Readable log axes: ticks at 1-2-5 steps labelled as plain numbers (10, 20, 50, 100 ms).

matplotlib's default log axis labels only the powers of ten (10², 10³), so a
reader cannot tell 150 ms from 300 ms; latencies span one to four decades here,
where 1-2-5 labels stay legible.
"""

from __future__ import annotations

import math

from matplotlib.axis import Axis
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter


def nice_log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 values within [lo, hi]: finer within one decade, 1-3 beyond three, 1 beyond six."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        return []
    decades = math.log10(hi / lo)
    steps: tuple[float, ...] = (1, 2, 5) if decades <= 3.5 else (1, 3) if decades <= 6 else (1,)
    if decades <= 1.2:  # within about one decade 1-2-5 leaves one or two ticks
        steps = (1, 1.5, 2, 3, 4, 5, 6, 8)
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for step in steps:
            value = step * 10.0**exponent
            if lo <= value <= hi:
                ticks.append(float(f"{value:.12g}"))  # 0.30000000000000004 → 0.3
    return ticks


def number_label(value: float, _pos: object = None) -> str:
    """12, 0.5, 2000: no exponent notation, no trailing zeros."""
    return f"{value:.10g}"


def label_log_axis(axis: Axis, lo: float, hi: float) -> None:
    """Put 1-2-5 ticks labelled as plain numbers on a log `axis` spanning lo..hi."""
    ticks = nice_log_ticks(lo, hi)
    if len(ticks) < 2:
        return  # a sliver of one decade: matplotlib's own ticks do better
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(number_label))
    axis.set_minor_formatter(NullFormatter())
