"""`mlws experiment` / `run_experiment.py`: exit codes and one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadgen.cli import add_compare_parser, add_experiment_parser

ROOT = Path(__file__).resolve().parent.parent


def mlws(argv: list[str]) -> int:
    """Parse and run like mlws/cli.py does, with only our two subcommands."""
    parser = argparse.ArgumentParser(prog="mlws")
    sub = parser.add_subparsers(dest="command", required=True)
    add_experiment_parser(sub)
    add_compare_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_experiment_py_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        {
            "name": "x",
            "duration_s": 5,
            "load": 0.5,
            "scheduler": {"lanes": 0},
            "service_time": {"fixed": {"*": {"base_ms": 1, "per_sample_ms": 1}}},
        },
    )
    proc = subprocess.run(
        [sys.executable, "run_experiment.py", "--config", str(bad), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {bad}: scheduler.lanes: Input should be greater than or equal to 1"
    ]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_experiment_subcommand_runs_and_seed_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(
        tmp_path,
        {
            "name": "cli",
            "duration_s": 3,
            "arrival_rate": 20,
            "service_time": {"fixed": {"*": {"base_ms": 1, "per_sample_ms": 1}}},
        },
    )
    assert (
        mlws(["experiment", "--config", str(good), "--out", str(tmp_path / "r"), "--seed", "9"])
        == 0
    )
    [run] = (tmp_path / "r").iterdir()
    assert run.name.startswith("cli-") and run.name.endswith("-9")
    assert (run / "summary.json").is_file()
    assert f"results: {run}" in capsys.readouterr().out


def test_missing_config_and_bad_lists_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mlws(["experiment", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert mlws(["compare", "--config", "x.yaml", "--schedulers", "fifo,lifo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --schedulers: unknown policy 'lifo'; choose from fifo,")
    assert mlws(["compare", "--config", "x.yaml", "--loads", "0.5,lots"]) == 2
    assert "--loads: 'lots' is not a number" in capsys.readouterr().err


def test_negative_seed_is_an_argparse_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        mlws(["experiment", "--config", "x.yaml", "--seed", "-1"])
    assert exit_info.value.code == 2
