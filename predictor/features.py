"""Training rows and feature vectors of the learned latency predictor.

A row is one measured combination, as `mlws profile` writes it (or as the live
gateway exports its observed service times in the same columns):
workload, backend, precision, batch_size, threads, [busy_lanes], [param_count,
flops_per_sample], and latency statistics (mean_ms, p50_ms, p95_ms, p99_ms).

Features deliberately describe a model by its *size* (log parameters, log
FLOPs per sample) rather than by its name, so an unseen model can be predicted
from its size; the name is only used to look the size up when a row lacks it.

Pure numpy + csv: the simulator imports this and must not import torch.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the feature list or its meaning changes: saved predictors check it.
SCHEMA_VERSION = 1
#: Numeric features, in column order; one-hot backend and precision columns follow.
NUMERIC_FEATURES: tuple[str, ...] = (
    "log_batch",  # ln(batch_size): batch effects are multiplicative
    "batch_size",
    "log_work",  # ln(flops_per_sample × batch_size): the FLOPs of the whole dispatch
    "log_flops",  # ln(flops_per_sample): size descriptor 1
    "log_params",  # ln(param_count): size descriptor 2 (weights to stream)
    "threads",  # intra-op threads of the lane
    "busy_lanes",  # other lanes busy at the same time (contention); 0 when unknown
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("backend", "precision")
REQUIRED_COLUMNS: tuple[str, ...] = ("workload", "backend", "batch_size")
#: Columns filled in when absent: precision fp32, one thread, no other lane busy.
DEFAULTS: dict[str, Any] = {"precision": "fp32", "threads": 1, "busy_lanes": 0}
STATS: tuple[str, ...] = ("mean_ms", "p50_ms", "p95_ms", "p99_ms")


class FeatureError(ValueError):
    """Rows that cannot be turned into features (missing column, bad value, unknown size)."""


@dataclass(frozen=True)
class ProfileData:
    """Profile rows as columns (numpy arrays of equal length)."""

    workload: np.ndarray
    backend: np.ndarray
    precision: np.ndarray
    batch_size: np.ndarray  # int
    threads: np.ndarray  # int
    busy_lanes: np.ndarray  # int
    param_count: np.ndarray  # float
    flops_per_sample: np.ndarray  # float
    #: Latency statistics present in the source (milliseconds), by column name.
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.batch_size)

    def subset(self, mask: np.ndarray) -> ProfileData:
        """The rows where `mask` is true (or the rows at the given indices)."""
        cols = {n: getattr(self, n)[mask] for n in _ARRAY_FIELDS}
        return ProfileData(**cols, stats={k: v[mask] for k, v in self.stats.items()})

    def with_batch(self, batch: np.ndarray) -> ProfileData:
        """The same rows at other batch sizes (used to query the knots of the batch axis)."""
        return replace(self, batch_size=np.asarray(batch, dtype=np.int64))

    def stat(self, name: str) -> np.ndarray:
        """One latency statistic; FeatureError naming the column if the source lacks it."""
        if name not in self.stats:
            have = ", ".join(self.stats) or "none"
            raise FeatureError(f"the rows have no {name} column (latency columns: {have})")
        return self.stats[name]

    def groups(self) -> np.ndarray:
        """'workload/backend' per row (+ '/precision' when there are several): the unit
        evaluation reports are broken down by."""
        names = np.char.add(np.char.add(self.workload.astype(str), "/"), self.backend.astype(str))
        if len(set(self.precision.tolist())) > 1:
            names = np.char.add(np.char.add(names, "/"), self.precision.astype(str))
        return names


_ARRAY_FIELDS = (
    "workload",
    "backend",
    "precision",
    "batch_size",
    "threads",
    "busy_lanes",
    "param_count",
    "flops_per_sample",
)


def catalogue_size(workload: str) -> tuple[float, float] | None:
    """(param_count, flops_per_sample) of a catalogued workload, None if unknown or unsized."""
    from workloads.registry import get_workload  # torch-free import

    try:
        spec = get_workload(workload).spec
    except ValueError:
        return None
    if spec.flops_per_sample <= 0 or spec.param_count <= 0:
        return None  # e.g. a user ONNX file: its FLOPs are not known
    return float(spec.param_count), float(spec.flops_per_sample)


def load_profile_data(
    source: Any, sizes: Mapping[str, tuple[float, float]] | None = None
) -> ProfileData:
    """Rows from a CSV path, a mapping of columns, a DataFrame, a list of row dicts or ProfileData,
    or a list of CSV paths (their rows one after another, see `concat_profile_data`).

    `sizes` maps workload → (param_count, flops_per_sample) for rows without
    those columns (the catalogue is consulted after it).
    """
    if isinstance(source, ProfileData):
        return source
    if isinstance(source, str | Path):
        columns = _read_csv(Path(source))
    elif _is_path_list(source):
        return concat_profile_data([load_profile_data(path, sizes) for path in source])
    elif isinstance(source, Mapping):
        columns = {str(k): _as_array(v) for k, v in source.items()}
    elif hasattr(source, "columns") and hasattr(source, "__getitem__"):  # a pandas DataFrame
        columns = {str(c): np.asarray(source[c]) for c in source.columns}
    elif isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        columns = _rows_to_columns(source)
    else:
        raise FeatureError(f"cannot read profile rows from a {type(source).__name__}")
    return _columns_to_data(columns, sizes or {})


def _is_path_list(source: Any) -> bool:
    return (
        isinstance(source, Sequence)
        and len(source) > 0
        and all(isinstance(s, str | Path) for s in source)
    )


def concat_profile_data(parts: Sequence[ProfileData]) -> ProfileData:
    """The rows of every part, in order: e.g. `mlws profile` output plus the live
    gateway's export. Each part has filled its own defaults (a profiler CSV has no
    busy_lanes column: 0), so parts may differ in optional columns; the latency
    columns kept are those every part has."""
    if not parts:
        raise FeatureError("no profile rows to concatenate")
    stats = [s for s in STATS if all(s in p.stats for p in parts)]
    return ProfileData(
        **{n: np.concatenate([getattr(p, n) for p in parts]) for n in _ARRAY_FIELDS},
        stats={s: np.concatenate([p.stats[s] for p in parts]) for s in stats},
    )


def _as_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return arr.reshape(1) if arr.ndim == 0 else arr


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise FeatureError(f"{path}: cannot read profile: {exc.strerror or exc}") from None
    if not rows:
        raise FeatureError(f"{path}: profile has no rows")
    return {k: np.asarray(v) for k, v in _rows_to_columns(rows).items()}


def _rows_to_columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    rows = list(rows)
    names = [k for k in rows[0] if k is not None] if rows else []
    missing = [n for n in names if any(n not in r for r in rows)]
    if missing:
        raise FeatureError(f"rows disagree on their columns: {', '.join(missing)}")
    return {n: np.asarray([r[n] for r in rows]) for n in names}


def _numbers(columns: Mapping[str, np.ndarray], name: str, n: int, kind: type) -> np.ndarray:
    """A numeric column (or its default), checked finite; strings from a CSV are parsed."""
    raw = columns.get(name)
    if raw is None:
        return np.full(n, DEFAULTS[name], dtype=kind)
    try:
        values = np.asarray(raw, dtype=float)
    except ValueError:
        raise FeatureError(f"column {name} must be numeric, got {list(raw[:3])!r}…") from None
    if not np.all(np.isfinite(values)):
        raise FeatureError(f"column {name} has missing or non-finite values")
    if kind is int and np.any(values != np.round(values)):
        raise FeatureError(f"column {name} must hold whole numbers")
    return values.astype(kind)


def _columns_to_data(
    columns: Mapping[str, np.ndarray], sizes: Mapping[str, tuple[float, float]]
) -> ProfileData:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise FeatureError(f"missing column(s) {', '.join(missing)}")
    n = len(columns["workload"])
    if any(len(v) != n for v in columns.values()):
        raise FeatureError("columns have different lengths")
    text = {c: np.asarray(columns.get(c, [DEFAULTS.get(c)] * n)).astype(str) for c in _TEXT}
    batch, threads = _numbers(columns, "batch_size", n, int), _numbers(columns, "threads", n, int)
    busy = _numbers(columns, "busy_lanes", n, int)
    bounds = (("batch_size", batch, 1), ("threads", threads, 1), ("busy_lanes", busy, 0))
    for name, values, low in bounds:
        if np.any(values < low):
            raise FeatureError(f"column {name} must be >= {low}, got {values.min()}")
    params, flops = _sizes(columns, text["workload"], sizes)
    stats = {s: _numbers(columns, s, n, float) for s in STATS if s in columns}
    for s, values in stats.items():
        if np.any(values <= 0):
            raise FeatureError(f"column {s} must be > 0 milliseconds")
    return ProfileData(
        **text,
        batch_size=batch,
        threads=threads,
        busy_lanes=busy,
        param_count=params,
        flops_per_sample=flops,
        stats=stats,
    )


_TEXT = ("workload", "backend", "precision")


def _sizes(
    columns: Mapping[str, np.ndarray],
    workloads: np.ndarray,
    sizes: Mapping[str, tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """param_count and flops_per_sample per row: the columns, else `sizes`, else the catalogue."""
    n = len(workloads)
    params = np.full(n, np.nan)
    flops = np.full(n, np.nan)
    if "param_count" in columns and "flops_per_sample" in columns:
        params = np.asarray(columns["param_count"], dtype=float)
        flops = np.asarray(columns["flops_per_sample"], dtype=float)
    unsized = ~(np.isfinite(params) & np.isfinite(flops) & (params > 0) & (flops > 0))
    for name in np.unique(workloads[unsized]):
        size = sizes.get(str(name)) or catalogue_size(str(name))
        if size is None:
            raise FeatureError(
                f"workload {str(name)!r}: no param_count/flops_per_sample (> 0) in the rows and "
                "none in the catalogue; give both columns"
            )
        rows = unsized & (workloads == name)
        params[rows], flops[rows] = size
    return params, flops


def categories(data: ProfileData) -> dict[str, list[str]]:
    """The backend and precision values seen in training, sorted: the one-hot columns."""
    return {c: sorted({str(v) for v in getattr(data, c)}) for c in CATEGORICAL_FEATURES}


def feature_names(cats: Mapping[str, Sequence[str]]) -> list[str]:
    """Column names of the feature matrix for the given categories."""
    onehot = [f"{c}={v}" for c in CATEGORICAL_FEATURES for v in cats[c]]
    return [*NUMERIC_FEATURES, *onehot]


def schema(cats: Mapping[str, Sequence[str]], stat: str) -> dict[str, Any]:
    """What a saved predictor expects its inputs to be; compared on load."""
    return {
        "version": SCHEMA_VERSION,
        "numeric": list(NUMERIC_FEATURES),
        "categorical": {c: list(cats[c]) for c in CATEGORICAL_FEATURES},
        "target": stat,
    }


def feature_matrix(data: ProfileData, cats: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The model's input: one row per profile row, columns as in `feature_names`.

    A backend or precision the model never saw is an error: its one-hot columns
    would be all zero, and the answer would silently be some other backend's.
    """
    for c in CATEGORICAL_FEATURES:
        unseen = sorted(set(getattr(data, c).astype(str)) - set(cats[c]))
        if unseen:
            raise FeatureError(
                f"{c} {', '.join(unseen)} not in the training data (trained on "
                f"{', '.join(cats[c])})"
            )
    batch = data.batch_size.astype(float)
    numeric = [
        np.log(batch),
        batch,
        np.log(data.flops_per_sample * batch),
        np.log(data.flops_per_sample),
        np.log(data.param_count),
        data.threads.astype(float),
        data.busy_lanes.astype(float),
    ]
    onehot = [(getattr(data, c) == v).astype(float) for c in CATEGORICAL_FEATURES for v in cats[c]]
    return np.column_stack([*numeric, *onehot])


def run_cdf(x: np.ndarray, p50: np.ndarray, p95: np.ndarray, p99: np.ndarray) -> np.ndarray:
    """Per row, the estimated fraction of that row's runs that took at most x ms.

    A profile row summarises its runs by p50/p95/p99 only, so the CDF is
    interpolated linearly through (p50, 0.5), (p95, 0.95) and (p99, 1.0) —
    p99 of a few dozen runs is their maximum — with a lower tail mirrored
    about the median: 5 % of runs below 2·p50 − p95, none below 2·p50 − p99.
    """
    out = np.empty(len(x))
    for i, (xi, a, b, c) in enumerate(zip(x, p50, p95, p99, strict=True)):
        xs, us = _cdf_points(a, b, c)
        out[i] = np.interp(xi, xs, us, left=0.0, right=1.0)
    return out


def run_quantiles(levels: np.ndarray, p50: np.ndarray, p95: np.ndarray, p99: np.ndarray):
    """Inverse of `run_cdf`: per row, the latency at each level (rows × levels), ms."""
    out = np.empty((len(p50), len(levels)))
    for i, (a, b, c) in enumerate(zip(p50, p95, p99, strict=True)):
        xs, us = _cdf_points(a, b, c)
        out[i] = np.interp(levels, us, xs)
    return out


def _cdf_points(p50: float, p95: float, p99: float) -> tuple[np.ndarray, np.ndarray]:
    # Sort first: a row from a tiny sample may report p95 > p99 after rounding.
    a, b, c = np.sort([p50, p95, p99])
    floor = 1e-6 * a  # latencies are positive; keep the mirrored tail above zero
    xs = np.array([max(2 * a - c, floor), max(2 * a - b, floor), a, b, c])
    xs = np.maximum.accumulate(xs + np.arange(5) * 1e-9 * a)  # strictly increasing for interp
    return xs, np.array([0.0, 0.05, 0.5, 0.95, 1.0])
