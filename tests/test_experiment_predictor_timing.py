"""service_time.predictor: the learned predictor times the simulated lanes.

The predictor is trained from the shipped profile (a second or two, once: the
runner caches it), which has no ViT-B/16 rows and no batch above 64.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.arrivals import poisson_arrivals
from loadgen.compare import run_compare
from loadgen.config import ConfigError, load_experiment_config
from loadgen.experiment import (
    build_policy_model,
    build_service_model,
    load_predictor,
    run_experiment,
    simulate_run,
)
from predictor.service_model import PredictorServiceTime

CPU_PROFILE = Path(__file__).resolve().parent.parent / "configs" / "profiles" / "cpu.csv"
#: Every test asks for the same predictor, so the runner's cache trains it once.
PREDICTOR = {"train_from": str(CPU_PROFILE), "quantile": 0.95}


def timed_config(tmp_path: Path, **overrides: Any) -> Path:
    """A short predictor-timed run where every job is exactly one dispatch.

    Without micro-batching or splitting, a job's service time in the trace is
    the service time of a dispatch of its own batch_size samples.
    """
    data: dict[str, Any] = {
        "name": "timed",
        "duration_s": 20,
        "arrival_rate": 2,
        "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"choices": [8, 128]}},
        "workload_mix": {"resnet18": 1, "vit_b_16": 1},
        "scheduler": {
            "policy": "dynamic",
            "lanes": 2,
            "microbatch": {"enabled": False},
            "max_dispatch_samples": None,
            "admission": {},  # every job runs: this checks timing, not admission
        },
        "service_time": {"predictor": True},
        "predictor": PREDICTOR,
        "seed": 1,
    }
    data.update(overrides)
    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_trace_service_times_are_the_predictors_mean(tmp_path: Path) -> None:
    config = load_experiment_config(timed_config(tmp_path))
    out = run_experiment(config, tmp_path / "results", run_id="run", quiet=True)

    with (out / "trace.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["outcome"] for r in rows} == {"ok"}
    # ViT-B/16 is in no profile and 128 is beyond the profiled batches: both still run.
    assert {r["workload"] for r in rows} == {"resnet18", "vit_b_16"}
    assert {int(r["batch_size"]) for r in rows} == {1, 8, 128}
    # The lanes take the mean at threads 1, not the quantile the scheduler plans with.
    mean = load_predictor(config).as_service_model(threads=1)
    for r in rows:
        expected_ms = 1e3 * mean.predict(
            r["workload"], r["backend"], r["precision"], int(r["batch_size"])
        )
        assert float(r["service_ms"]) == pytest.approx(expected_ms, abs=2e-3), r

    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["service_time"]["predictor"] is True
    assert summary["run"]["capacity_jobs_per_s"] > 0
    assert summary["run"]["predictor"]["quantile"] == 0.95
    assert sorted((out / "plots").iterdir())


def test_lanes_and_policy_share_one_trained_predictor(tmp_path: Path) -> None:
    config = load_experiment_config(
        timed_config(tmp_path, service_time={"predictor": True, "threads": 2})
    )
    lanes = build_service_model(config)
    assert isinstance(lanes, PredictorServiceTime)
    assert (lanes.threads, lanes.busy_lanes, lanes.quantile) == (2, 0, None)
    beliefs, info = build_policy_model(config, lanes)
    assert isinstance(beliefs, dict) and info is not None
    policy = beliefs["default"]  # one belief per lane group
    assert isinstance(policy, PredictorServiceTime)
    assert policy.predictor is lanes.predictor
    assert (policy.threads, policy.quantile, info["threads"]) == (2, 0.95, {"default": 2})
    # The scheduler plans with the quantile, and believes the lanes' mean (shedding).
    key = ("vit_b_16", "onnx", "fp32")
    assert policy.plan(*key, 4) > policy.predict(*key, 4) == lanes.predict(*key, 4)


def test_jitter_applies_on_top_of_the_predictor(tmp_path: Path) -> None:
    config = load_experiment_config(timed_config(tmp_path, jitter=0.3))
    model = build_service_model(config)
    run = simulate_run(config, poisson_arrivals(config, 2, 20, config.seed), model)
    ratios = [
        (j.end - j.start) / model.predict(j.workload, j.backend, j.precision, j.samples)
        for j in run.result.jobs
    ]
    assert len(ratios) > 20 and min(ratios) < 0.9 and max(ratios) > 1.1


def test_a_mix_the_predictor_cannot_time_names_the_key(tmp_path: Path) -> None:
    # The shipped profile is fp32 only: an fp16 run cannot be timed by it.
    config = load_experiment_config(timed_config(tmp_path, precision="fp16"))
    with pytest.raises(ConfigError, match=r"service_time\.predictor: cannot predict the mix"):
        build_service_model(config)


def test_compare_runs_predictor_timed(tmp_path: Path) -> None:
    config = load_experiment_config(timed_config(tmp_path, load=0.5, arrival_rate=None))
    rows = run_compare(config, ["fifo", "dynamic"], [0.5], tmp_path / "cmp", quiet=True)
    assert [r["scheduler"] for r in rows] == ["fifo", "dynamic"]
    assert all(r["jobs"] > 0 for r in rows)
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_live_runs_refuse_predictor_timed_lanes(tmp_path: Path) -> None:
    config = load_experiment_config(timed_config(tmp_path, mode="live"))
    with pytest.raises(ConfigError, match=r"service_time\.predictor: .* simulated lanes only"):
        run_experiment(config, tmp_path / "r")
    assert not (tmp_path / "r").exists()
