"""The learned latency predictor: service time from model size, backend and batch.

How a prediction is made (milliseconds of one dispatch):

1. **A roofline-style base law** per (backend, precision): t = a + k · GFLOPs
   per sample · batch, fitted by least squares on *relative* error. Batched CPU
   inference is close to this law, and because it is written in FLOPs it
   extends to a model never profiled (per-sample time ∝ FLOPs at a fixed
   backend and thread count) and to batches beyond the profiled range.
2. **A learned correction** r = ln(t / base), by a random forest or gradient
   boosting over the features of `predictor.features` (log batch, log FLOPs,
   log parameters, threads, busy lanes, backend, precision). Trees are
   piecewise constant, so the correction is evaluated at the profiled batch
   sizes ("knots") around the query and interpolated linearly in ln(batch):
   a batch of 2 gets a blend of the corrections at 1 and 4, not one of them.
3. **A tail quantile**: gradient boosting trains one quantile regressor
   (loss="quantile", alpha=q) per requested q on pseudo-runs drawn from each
   row's p50/p95/p99; the random forest uses its mean. Either way the answer
   is then calibrated conformally: a profiled batch size is held out, the
   model refitted without it, and the q-quantile of ln(measured run ÷
   predicted) over the held-out rows becomes a multiplicative margin, so the
   quantile covers both run-to-run noise and the model's own error.

`as_service_model()` makes the predictor a `ServiceTimeModel` (seconds,
memoised, monotone in the batch; `predictor.service_model`) for the scheduler
and the simulator.
Fitted trees are kept as plain arrays (`predictor.trees`), evaluated with
numpy: saved files (`predictor.model_file`) hold numbers only and cannot run
code when loaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from predictor.features import (
    STATS,
    FeatureError,
    ProfileData,
    categories,
    feature_matrix,
    feature_names,
    load_profile_data,
    run_quantiles,
    schema,
)
from predictor.model_file import PredictorFileError, read_model_file, write_model_file
from predictor.trees import FIELDS as TREE_FIELDS
from predictor.trees import TreeEnsemble

if TYPE_CHECKING:
    from predictor.service_model import PredictorServiceTime

ModelType = Literal["random_forest", "gradient_boosting"]
MODEL_TYPES: tuple[str, ...] = ("random_forest", "gradient_boosting")
#: Levels at which each row's run distribution is sampled into pseudo-runs: finely for
#: calibration scores (cheap), coarsely for the quantile regressors (pinball-loss boosting
#: costs time per sample).
PSEUDO_LEVELS = (np.arange(20) + 0.5) / 20
TRAIN_LEVELS = (np.arange(10) + 0.5) / 10
#: At most this many profiled batch sizes are held out in turn for calibration.
MAX_FOLDS = 6
Core = dict[str, Any]  # a fitted model: plain data and TreeEnsembles (see save/load)


def _regressor(model_type: str, seed: int, alpha: float | None = None) -> Any:
    # Imported here: loading and checking a file, or a CLI mistake, need no scikit-learn.
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    if model_type == "random_forest":
        # n_jobs=1: the gateway's lanes own the cores; a few hundred rows need no parallelism.
        return RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    if alpha is None:
        return GradientBoostingRegressor(n_estimators=200, learning_rate=0.075, random_state=seed)
    # Pinball-loss boosting is slower per tree: fewer, larger steps, leaves of >= 5 pseudo-runs.
    quantile = {"loss": "quantile", "alpha": alpha, "min_samples_leaf": 5}
    return GradientBoostingRegressor(
        n_estimators=100, learning_rate=0.15, random_state=seed, **quantile
    )


def _fit_line(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, k) of t ≈ a + k·x minimising relative error; a ≥ 0, k > 0 (through 0 otherwise)."""
    w = 1.0 / t**2
    s, sx, sxx = w.sum(), (w * x).sum(), (w * x * x).sum()
    st, sxt = (w * t).sum(), (w * x * t).sum()
    det = s * sxx - sx * sx
    if det > 1e-9 * s * sxx:
        k = (s * sxt - sx * st) / det
        a = (st - k * sx) / s
        if a >= 0 and k > 0:
            return float(a), float(k)
    return 0.0, float(sxt / sxx)  # one batch size, or a negative intercept: time ∝ work


def _base_ms(core: Core, data: ProfileData) -> np.ndarray:
    """The base law a + k·GFLOPs·batch per row, ms."""
    out = np.empty(len(data))
    work = data.flops_per_sample / 1e9 * data.batch_size
    for key in {(str(b), str(p)) for b, p in zip(data.backend, data.precision, strict=True)}:
        line = core["base"].get(key)
        if line is None:
            have = ", ".join("/".join(k) for k in sorted(core["base"]))
            raise FeatureError(f"no training rows for {'/'.join(key)} (trained on {have})")
        rows = (data.backend == key[0]) & (data.precision == key[1])
        out[rows] = line[0] + line[1] * work[rows]
    return out


def _log_predict(core: Core, data: ProfileData, reg: Any) -> np.ndarray:
    """ln(ms): base law at the query's batch × the correction interpolated between knots."""
    knots = core["knots"]
    lb, lk = np.log(data.batch_size), np.log(knots)
    # The knot segment [lo, hi] holding lb (the first or last one outside the knots).
    hi = np.searchsorted(lk, lb).clip(min(1, len(lk) - 1), len(lk) - 1)
    lo = np.maximum(hi - 1, 0)
    span = lk[hi] - lk[lo]
    w = np.divide(lb - lk[lo], span, out=np.zeros(len(lb)), where=span > 0)
    both = np.vstack(
        [
            feature_matrix(data.with_batch(knots[lo]), core["cats"]),
            feature_matrix(data.with_batch(knots[hi]), core["cats"]),
        ]
    )
    r = reg.predict(both)
    r_lo, r_hi = r[: len(lb)], r[len(lb) :]
    # Below the smallest knot the correction is held; beyond the largest (w > 1) the
    # last segment's trend continues only upward (per-sample time rising: caches
    # overflow): efficiency gains that were never measured are not extrapolated.
    r = np.where(w > 1, np.where(r_hi < r_lo, r_hi, r_lo + w * (r_hi - r_lo)), r_lo)
    r = np.where((w > 0) & (w <= 1), (1 - w) * r_lo + w * r_hi, r)
    return np.log(_base_ms(core, data)) + r


def _pseudo_runs(data: ProfileData, stat: str, levels: np.ndarray = PSEUDO_LEVELS) -> np.ndarray:
    """rows × levels: run latencies each row's percentiles imply (the stat if it has none)."""
    if all(s in data.stats for s in ("p50_ms", "p95_ms", "p99_ms")):
        s = data.stats
        return run_quantiles(levels, s["p50_ms"], s["p95_ms"], s["p99_ms"])
    return np.repeat(data.stat(stat)[:, None], len(levels), axis=1)


def _fit_core(
    data: ProfileData, model_type: str, stat: str, qs: tuple[float, ...], seed: int
) -> Core:
    """Fit the base law, the mean correction and (boosting) one quantile model per q."""
    t = data.stat(stat)
    core: Core = {"cats": categories(data), "base": {}, "quantile": {}}
    core["knots"] = np.unique(data.batch_size).astype(np.int64)
    work = data.flops_per_sample / 1e9 * data.batch_size
    for key in {(str(b), str(p)) for b, p in zip(data.backend, data.precision, strict=True)}:
        rows = (data.backend == key[0]) & (data.precision == key[1])
        core["base"][key] = _fit_line(work[rows], t[rows])
    X = feature_matrix(data, core["cats"])
    log_base = np.log(_base_ms(core, data))
    mean = _regressor(model_type, seed).fit(X, np.log(t) - log_base)
    core["mean"] = TreeEnsemble.from_sklearn(mean)
    if model_type == "gradient_boosting":
        runs = _pseudo_runs(data, stat, TRAIN_LEVELS)
        k = runs.shape[1]
        Xr, yr = np.repeat(X, k, axis=0), (np.log(runs) - log_base[:, None]).ravel()
        for q in qs:
            reg = _regressor(model_type, seed, alpha=q).fit(Xr, yr)
            core["quantile"][q] = TreeEnsemble.from_sklearn(reg)
    return core


def _calibration_scores(
    data: ProfileData, model_type: str, stat: str, qs: tuple[float, ...], seed: int
) -> dict[float | None, np.ndarray]:
    """ln(run ÷ prediction) of held-out rows, per quantile model (None: the mean model).

    Each profiled batch size but the smallest is held out in turn, the model
    refitted without it and scored on it: interior ones measure interpolation
    error, the largest extrapolation error (the simulator asks for batches
    beyond the profile: max_batch 64-128 against profiles up to 32). At most
    MAX_FOLDS of them, evenly spread, the largest always included. With a
    single batch size the in-sample scores are used (optimistic: they miss
    the model's own error).
    """
    batches = np.unique(data.batch_size)[1:]
    if len(batches) > MAX_FOLDS:
        batches = batches[np.linspace(len(batches) - 1, 0, MAX_FOLDS).round().astype(int)]
    keys: list[float | None] = list(qs) if model_type == "gradient_boosting" else [None]
    scores: dict[float | None, list[np.ndarray]] = {k: [] for k in keys}
    combos = np.array([f"{b}/{p}" for b, p in zip(data.backend, data.precision, strict=True)])

    def score(fit: ProfileData, test: ProfileData) -> None:
        core = _fit_core(fit, model_type, stat, qs, seed)
        runs = np.log(_pseudo_runs(test, stat))
        for k in keys:
            reg = core["mean"] if k is None else core["quantile"][k]
            scores[k].append((runs - _log_predict(core, test, reg)[:, None]).ravel())

    for b in batches:
        held = data.batch_size == b
        # Score only rows whose backend/precision keeps training rows without them.
        held &= np.isin(combos, combos[~held])
        if held.any():
            score(data.subset(~held), data.subset(held))
    if not any(scores.values()):  # a single batch size: in-sample scores
        score(data, data)
    return {k: np.concatenate(v) for k, v in scores.items()}


def conformal_offset(scores: np.ndarray, q: float) -> float:
    """The ⌈(n+1)q⌉-th smallest score: the split-conformal margin for coverage q."""
    s = np.sort(scores)
    k = min(len(s), math.ceil((len(s) + 1) * q))
    return float(s[max(k, 1) - 1])


class LatencyPredictor:
    """Service time (ms) of a dispatch, learned from profile rows (module docstring)."""

    def __init__(
        self,
        model_type: ModelType | str = "random_forest",
        *,
        quantiles: tuple[float, ...] = (0.95,),
        stat: str = "mean_ms",
        seed: int = 0,
    ) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r}; choose from {MODEL_TYPES}")
        if stat not in STATS:
            raise ValueError(f"unknown stat {stat!r}; choose from {', '.join(STATS)}")
        if not quantiles or any(not 0 < q < 1 for q in quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
        self.model_type = model_type
        self.quantiles = tuple(sorted({float(q) for q in quantiles}))
        self.stat = stat
        self.seed = seed
        self._core: Core | None = None
        self._scores: dict[float | None, np.ndarray] = {}
        #: workload → (param_count, flops_per_sample) seen in training.
        self.sizes: dict[str, tuple[float, float]] = {}
        #: What the model was trained on (rows, workloads, batch sizes, seconds).
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    def train(self, data: Any) -> LatencyPredictor:
        """Fit on profile rows: a CSV path, columns, a DataFrame or row dicts. Returns self."""
        started = time.perf_counter()
        rows = load_profile_data(data)
        rows.stat(self.stat)  # fail early, naming the column
        args = (self.model_type, self.stat, self.quantiles, self.seed)
        self._core = _fit_core(rows, *args)
        self._scores = _calibration_scores(rows, *args)
        self.sizes = {
            str(w): (float(p), float(f))
            for w, p, f in zip(rows.workload, rows.param_count, rows.flops_per_sample, strict=True)
        }
        self.info = {
            "rows": len(rows),
            "workloads": sorted(self.sizes),
            "backends": sorted({str(b) for b in rows.backend}),
            "batch_sizes": [int(b) for b in np.unique(rows.batch_size)],
            "train_s": round(time.perf_counter() - started, 3),
        }
        return self

    @property
    def core(self) -> Core:
        if self._core is None:
            raise RuntimeError("the predictor is not trained; call train() or load() first")
        return self._core

    # ------------------------------------------------------------------ prediction
    def _rows(self, features: Any) -> tuple[ProfileData, bool]:
        scalar = isinstance(features, Mapping) and all(np.ndim(v) == 0 for v in features.values())
        return load_profile_data(features, sizes=self.sizes), scalar

    def predict(self, features: Any) -> float | np.ndarray:
        """Expected service time in ms: a float for one row dict, else one value per row.

        Rows need workload (or param_count + flops_per_sample), backend and
        batch_size; precision, threads and busy_lanes default to fp32, 1, 0.
        """
        rows, scalar = self._rows(features)
        ms = np.exp(_log_predict(self.core, rows, self.core["mean"]))
        return float(ms[0]) if scalar else ms

    def predict_quantile(self, features: Any, q: float = 0.95) -> float | np.ndarray:
        """The q-quantile of a dispatch's service time, ms (calibrated; see module docstring)."""
        rows, scalar = self._rows(features)
        ms = np.exp(_log_predict(self.core, rows, self._quantile_reg(q)) + self._offset(q))
        return float(ms[0]) if scalar else ms

    def _quantile_reg(self, q: float) -> Any:
        if self.model_type == "random_forest":
            if not 0 < q < 1:
                raise ValueError(f"quantile must lie strictly between 0 and 1, got {q}")
            return self.core["mean"]
        reg = self.core["quantile"].get(float(q))
        if reg is None:
            trained = ", ".join(str(k) for k in self.core["quantile"])
            raise ValueError(f"quantile {q} was not trained (trained: {trained})")
        return reg

    def _offset(self, q: float) -> float:
        key = None if self.model_type == "random_forest" else float(q)
        return conformal_offset(self._scores[key], q)

    def quantile_margin(self, q: float = 0.95) -> float:
        """The calibrated factor the q-quantile model's answer is multiplied by."""
        self._quantile_reg(q)
        return math.exp(self._offset(q))

    def as_service_model(
        self, threads: int = 1, busy_lanes: int = 0, quantile: float | None = None
    ) -> PredictorServiceTime:
        """This predictor as a `ServiceTimeModel` (seconds) at a fixed lane setting."""
        from predictor.service_model import PredictorServiceTime

        if quantile is not None:
            self._quantile_reg(quantile)  # an untrained quantile fails here, not mid-run
        return PredictorServiceTime(self, threads=threads, busy_lanes=busy_lanes, quantile=quantile)

    # ------------------------------------------------------------------ files
    def schema(self) -> dict[str, Any]:
        """The feature schema this predictor was trained with."""
        return schema(self.core["cats"], self.stat)

    def save(self, path: str | Path) -> Path:
        """Write the predictor to `path`: a JSON header and numeric arrays only."""
        core = self.core
        ensembles = {"mean": core["mean"], **{f"q{q}": e for q, e in core["quantile"].items()}}
        arrays: dict[str, np.ndarray] = {"knots": core["knots"]}
        for name, ensemble in ensembles.items():
            arrays.update({f"{name}.{field}": a for field, a in ensemble.arrays().items()})
        for key, scores in self._scores.items():
            arrays["scores." + ("mean" if key is None else f"q{key}")] = scores
        header = {
            "model_type": self.model_type,
            "schema": self.schema(),
            "trained": self.info,
            "quantiles": list(self.quantiles),
            "seed": self.seed,
            "sizes": {w: list(s) for w, s in self.sizes.items()},
            "base": [[b, p, a, k] for (b, p), (a, k) in core["base"].items()],
            "ensembles": {n: [e.constant, e.scale] for n, e in ensembles.items()},
        }
        return write_model_file(path, header, arrays)

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        """Read a file written by `save`. It holds numbers only: loading runs no code."""
        header, arrays = read_model_file(path, _header_problem)
        predictor = cls(
            header["model_type"],
            quantiles=tuple(header["quantiles"]),
            stat=header["schema"]["target"],
        )
        try:
            predictor._core, predictor._scores = _core_from_file(header, arrays)
            predictor.seed = int(header["seed"])
            predictor.sizes = {
                str(w): (float(p), float(f)) for w, (p, f) in header["sizes"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorFileError(f"{path}: damaged predictor file ({exc})") from None
        predictor.info = dict(header.get("trained", {}))
        return predictor


def _core_from_file(
    header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[Core, dict[float | None, np.ndarray]]:
    """The fitted core and calibration scores from a file's header and arrays."""
    cats = header["schema"]["categorical"]
    width = len(feature_names(cats))
    ensembles: dict[str, TreeEnsemble] = {}
    for name, (constant, scale) in header["ensembles"].items():
        fields = {f: arrays[f"{name}.{f}"] for f in TREE_FIELDS}
        ensembles[name] = TreeEnsemble.from_arrays(fields, constant, scale)
        if ensembles[name].features_used > width:
            raise ValueError(f"trees {name!r} test a feature the schema does not have")
    core: Core = {
        "cats": cats,
        "knots": arrays["knots"].astype(np.int64),
        "base": {(str(b), str(p)): (float(a), float(k)) for b, p, a, k in header["base"]},
        "mean": ensembles.pop("mean"),
        "quantile": {float(n[1:]): e for n, e in ensembles.items()},
    }
    if not len(core["knots"]) or core["knots"].min() < 1:
        raise ValueError("no batch-size knots")
    scores: dict[float | None, np.ndarray] = {}
    for name, values in arrays.items():
        if name.startswith("scores."):
            tag = name.removeprefix("scores.")
            scores[None if tag == "mean" else float(tag[1:])] = values.astype(np.float64)
    return core, scores


def _header_problem(header: dict[str, Any]) -> str | None:
    """Why a saved header does not fit this code (features, model type), or None if it does."""
    saved = header.get("schema")
    if not isinstance(saved, dict) or not isinstance(saved.get("categorical"), dict):
        return "the header has no feature schema"
    current = schema(saved["categorical"], saved.get("target", ""))
    if saved.get("target") not in STATS or saved != current:
        return (
            f"feature schema {saved.get('version')} {saved.get('numeric')} does not match "
            f"this mlws's schema {current['version']} {current['numeric']}"
        )
    if header.get("model_type") not in MODEL_TYPES:
        return f"unknown model_type {header.get('model_type')!r}"
    quantiles = header.get("quantiles")
    if not isinstance(quantiles, list) or not all(
        isinstance(q, float) and 0 < q < 1 for q in quantiles
    ):
        return f"bad quantiles {quantiles!r}"
    return None
