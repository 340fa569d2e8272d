"""Token costs from measured memory: a `mlws profile` CSV's resident and per-sample MiB.

A profiled model at a precision costs `resident_mb + per_sample_mb × samples`
tokens (1 token = 1 MiB) instead of the hand-set table; `scheduler.tokens.profile`
names the file. Over the backends and thread counts a model was profiled with, the
largest figures are taken (a dispatch may run on any of them). A file whose rows
come from several devices is refused: host and GPU memory are different budgets.
Pure csv: the simulator reads this too.
"""

from __future__ import annotations

import csv
from pathlib import Path

from scheduling.tokens import TokenCost

MEMORY_COLUMNS = ("resident_mb", "per_sample_mb")


def read_memory_costs(path: Path, name: str) -> dict[tuple[str, str], TokenCost]:
    """Per (workload, precision), the measured cost in the CSV at `path` (`name`: how
    the config spells it, for the costs' source and the errors). ValueError naming
    `name` for a missing file, a file without memory columns or with none measured."""
    where = f"scheduler.tokens.profile: {name}"
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise ValueError(f"{where}: file not found") from None
    lacking = [c for c in ("workload", "precision", "device", *MEMORY_COLUMNS) if c not in header]
    if lacking:
        raise ValueError(
            f"{where}: no {', '.join(lacking)} column: memory columns come from `mlws profile` "
            "(a profile written before it measured memory, or a gateway's /v1/profile "
            "export, has none); profile again"
        )
    measured = [r for r in rows if all(r[c].strip() for c in MEMORY_COLUMNS)]
    if not measured:
        raise ValueError(f"{where}: no row has measured memory (resident_mb, per_sample_mb)")
    devices = sorted({r["device"] for r in measured})
    if len(devices) > 1:
        raise ValueError(
            f"{where}: rows of several devices ({', '.join(devices)}); token costs need one "
            "device's memory: keep one profile per device"
        )
    figures: dict[tuple[str, str], tuple[float, float]] = {}
    for r in measured:
        key = (r["workload"], r["precision"])
        resident, per_sample = float(r["resident_mb"]), max(0.0, float(r["per_sample_mb"]))
        old = figures.get(key, (0.0, 0.0))
        figures[key] = (max(old[0], resident), max(old[1], per_sample))
    source = f"profile {name}"
    return {key: TokenCost(base, per, source) for key, (base, per) in figures.items()}
