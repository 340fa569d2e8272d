"""The predictor from the outside: `mlws predictor`, the seed's collect API, the runner."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.arrivals import arrival_rate, poisson_arrivals
from loadgen.config import ConfigError, load_experiment_config, parse_experiment_config
from loadgen.experiment import build_service_model, run_experiment, simulate_run
from mlws.cli import main
from predictor.collect import collect_profiling_data
from predictor.evaluate import evaluate_predictor, plot_predictions, predictions_figure
from predictor.features import load_profile_data
from predictor.latency import LatencyPredictor
from predictor.profiler import ProfileSettings
from serving.config import PredictorConfig
from tests.test_predictor import TEST, TRAIN, synthetic

MLWS = str(Path(sys.executable).with_name("mlws"))


def mlws(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLWS, *args], capture_output=True, text=True, timeout=120)


def write_csv(path: Path, cols: dict[str, list[Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        writer.writerows(zip(*cols.values(), strict=True))
    return path


@pytest.fixture(scope="module")
def profile_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(
        tmp_path_factory.mktemp("prof") / "p.csv", synthetic(TRAIN + TEST, workloads=("s", "l"))
    )


# ------------------------------------------------------------------------------------ CLI
def test_train_then_eval_ends_with_a_json_line(
    profile_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m" / "predictor.mlws"
    # train in-process through the same entry point (saves a second interpreter start)...
    code = main(
        [
            "predictor", "train", "--profiles", str(profile_csv), "--out", str(model),
            "--train-batch-sizes", "1,4,16,64", "--hold-out-workload", "l",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "trained random_forest on 8 rows (s; onnx, pytorch; batch sizes 1, 4, 16, 64)" in out
    # ...and eval as a user runs it: the console script in a subprocess.
    ev = mlws(
        "predictor", "eval", "--model", str(model), "--profiles", str(profile_csv),
        "--test-batch-sizes", "2,8,32", "--hold-out-workload", "l",
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert "MAPE" in ev.stdout
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert set(result) >= {"mape", "coverage", "per_group"}
    assert set(result["per_group"]) == {"l/onnx", "l/pytorch"}
    assert result["mape"] < 10.0  # an unseen workload, predicted from its size


def test_console_script_unknown_option_is_one_line() -> None:
    result = mlws("predictor", "eval", "--model", "m.pkl", "--profiles", "p.csv", "--bogus")
    assert result.returncode == 2
    assert result.stderr == "mlws predictor eval: error: unrecognized arguments: --bogus\n"


def test_plot_is_a_png(profile_csv: Path, tmp_path: Path) -> None:
    predictor = LatencyPredictor().train(synthetic([1, 4, 16], workloads=("s",)))
    rows = load_profile_data(synthetic(TEST, workloads=("s",)))
    import matplotlib.pyplot as plt  # to close the figure the test draws

    path = plot_predictions(predictor, rows, tmp_path / "plots" / "pred.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    # the axes say which marker is which, the title the test set and the error on it
    figure = predictions_figure(predictor, rows)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "measured (ms): filled = mean_ms, hollow = p95_ms"
    assert ax.get_ylabel() == "predicted (ms): filled = mean_ms, hollow = q0.95 quantile"
    mape = evaluate_predictor(predictor, rows)["mape"]
    sizes = ", ".join(str(b) for b in sorted(set(TEST)))
    assert f"test set: {len(rows)} rows: s at batch {sizes}" in ax.get_title()
    assert f"MAPE {mape:.1f} %" in ax.get_title()
    plt.close(figure)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--profiles", "P", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--profiles", "P", "--model-type", "svm"], "invalid choice: 'svm'"),
        (["train", "--profiles", "P", "--train-batch-sizes", "1,x"], "comma-separated integers"),
        (["eval", "--model", "P", "--profiles", "P", "--quantile", "2"], "strictly between 0"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--profiles", "P", "--train-batch-sizes", "3"], "leaves no rows"),
        (["train", "--profiles", "P", "--hold-out-workload", "r99"], "no rows for workload(s) r99"),
        (["train", "--profiles", "nope.csv"], "nope.csv: cannot read profile"),
        (["eval", "--model", "P", "--profiles", "P"], "not an mlws latency predictor file"),
        (["eval", "--model", "nope.pkl", "--profiles", "P"], "nope.pkl: cannot read"),
    ],
)
def test_mistakes_are_one_line_exit_2(
    profile_csv: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predictor", *[str(profile_csv) if a == "P" else a for a in args]]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse mistakes exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------ seed API
def test_collect_profiling_data_with_the_tiny_model(
    onnx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profiles.csv"
    rows = collect_profiling_data(
        workloads={"tiny": None},
        batch_sizes=[1, 2],
        backends=["onnx"],
        precisions=["fp32"],
        output_path=out,
        threads=[1],
        settings=ProfileSettings(warmup=1, min_repeats=3, min_time_s=0.0, max_time_s=0.2),
        onnx_dir=onnx_dir,
    )
    assert [(r.workload, r.backend, r.batch_size) for r in rows] == [
        ("tiny", "onnx", 1),
        ("tiny", "onnx", 2),
    ]
    with out.open() as fh:
        assert [r["batch_size"] for r in csv.DictReader(fh)] == ["1", "2"]
    # the seed API reports progress too: plain lines on stderr off a terminal
    err = capsys.readouterr().err
    assert "loading tiny on onnx (fp32, 1 thread)" in err
    assert "[1/2] tiny onnx fp32 bs=1 threads=1: p50 " in err and "[2/2] tiny onnx" in err
    with pytest.raises(ValueError, match="unknown workload 'resnet99'"):
        collect_profiling_data({"resnet99": None}, output_path=tmp_path / "x.csv")


# ------------------------------------------------------------------------------- runner
PROFILE = """workload,backend,precision,batch_size,threads,mean_ms,p50_ms,p95_ms,p99_ms
resnet18,onnx,fp32,1,1,4.0,4.0,4.4,4.8
resnet18,onnx,fp32,8,1,18.0,18.0,19.8,21.6
resnet18,onnx,fp32,32,1,66.0,66.0,72.6,79.2
"""


def experiment(tmp_path: Path, predictor: dict[str, Any], **overrides: Any) -> Path:
    (tmp_path / "profile.csv").write_text(PROFILE)
    # The predictor's rows: the same model believed 10x slower than the lanes run it.
    slow = "\n".join(
        ",".join(f"{float(v) * 10:g}" if i >= 5 else v for i, v in enumerate(line.split(",")))
        for line in PROFILE.strip().splitlines()[1:]
    )
    (tmp_path / "slow.csv").write_text(PROFILE.splitlines()[0] + "\n" + slow + "\n")
    data: dict[str, Any] = {
        "name": "pred",
        "duration_s": 20,
        "load": 0.5,
        "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"min": 8, "max": 16}},
        "service_time": {"profile": "profile.csv", "threads": 1},
        "scheduler": {"policy": "dynamic", "lanes": 2, "max_dispatch_ms": 50},
        "predictor": predictor,
        "seed": 1,
        **overrides,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_runner_trains_from_a_profile_and_the_scheduler_believes_it(tmp_path: Path) -> None:
    config = load_experiment_config(experiment(tmp_path, {"train_from": "slow.csv"}))
    out = run_experiment(config, tmp_path / "r", "run", quiet=True)
    run = json.loads((out / "summary.json").read_text())["run"]
    info = run["predictor"]
    assert info["used"] is True and info["source"] == "train_from: slow.csv"
    assert info["model_type"] == "random_forest" and info["trained"]["rows"] == 3
    # The same arrivals with the scheduler believing the profile: believing service
    # 10x slower than the lanes run it, the 50 ms budget cuts batch jobs into more dispatches.
    plain = config.model_copy(update={"predictor": PredictorConfig()})
    truth = build_service_model(plain)
    arrivals = poisson_arrivals(plain, arrival_rate(plain, truth), plain.duration_s, plain.seed)
    base = simulate_run(plain, arrivals, truth).summary["run"]
    assert "predictor" not in base and base["arrivals"] == run["arrivals"]
    assert run["dispatches"] > 2 * base["dispatches"]


@pytest.mark.parametrize(
    ("predictor", "message"),
    [
        ({"enabled": True}, "predictor.enabled: removed: a predictor is used when"),
        ({"path": "a.pkl", "train_from": "slow.csv"}, "predictor.train_from: give either path"),
        ({"path": "a.pkl", "model_type": "gradient_boosting"}, "model_type: applies"),
        ({"train_from": "gone.csv"}, "predictor.train_from: file not found"),
        ({"train_from": "slow.csv", "quantile": 1.5}, "predictor.quantile"),
        ({"quantile": 0.9}, "predictor.quantile: needs predictor.path or predictor.train_from"),
    ],
)
def test_predictor_config_errors_name_the_key(
    tmp_path: Path, predictor: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_experiment_config(experiment(tmp_path, predictor))


def test_live_mode_with_a_predictor_is_refused(tmp_path: Path) -> None:
    path = experiment(tmp_path, {"train_from": "slow.csv"}, mode="live")
    config = parse_experiment_config(yaml.safe_load(path.read_text()), source=str(path))
    with pytest.raises(ConfigError, match="drives mode: simulate only"):
        run_experiment(config, tmp_path / "r", quiet=True)


def test_a_mix_the_predictor_cannot_answer_fails_before_running(tmp_path: Path) -> None:
    path = experiment(tmp_path, {"train_from": "slow.csv"}, backends={"pytorch": 1})
    pytorch = PROFILE + "".join(
        line.replace(",onnx,", ",pytorch,") + "\n" for line in PROFILE.splitlines()[1:]
    )
    (tmp_path / "profile.csv").write_text(pytorch)  # the lanes can run pytorch; slow.csv cannot
    with pytest.raises(
        ConfigError, match="cannot predict the mix: backend pytorch not in the training data"
    ):
        run_experiment(load_experiment_config(path), tmp_path / "r", quiet=True)
    assert not (tmp_path / "r").exists()
