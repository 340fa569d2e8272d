"""`mlws` as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.onnx_models import write_mlp

MLWS = str(Path(sys.executable).with_name("mlws"))


def mlws(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLWS, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_models_json_reports_torchvision_parameter_counts() -> None:
    result = mlws("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["resnet18"]["param_count"] == 11_689_512
    assert rows["resnet50"]["param_count"] == 25_557_032
    assert rows["vit_b_16"]["param_count"] == 86_567_656
    assert rows["resnet50"]["input_shape"] == [3, 224, 224]
    assert [rows[n]["token_base"] for n in ("resnet18", "resnet50", "vit_b_16")] == [80, 160, 260]


def test_models_prints_one_line_per_workload() -> None:
    lines = mlws("models").stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["resnet18", "resnet50", "vit_b_16", "tiny"]
    assert "11,689,512" in lines[0] and "3x224x224" in lines[0]


def test_models_lists_user_onnx_files_after_the_built_ins(tmp_path: Path) -> None:
    path = write_mlp(tmp_path / "my_mlp.onnx")
    result = mlws("models", "--json", "--onnx", str(path), "--onnx", str(path))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["resnet18", "resnet50", "vit_b_16", "tiny", "my_mlp"]
    assert rows[-1]["input_shape"] == [8] and rows[-1]["flops_per_sample"] == 2 * 192


def test_models_refuses_two_onnx_files_of_one_name(tmp_path: Path) -> None:
    first = write_mlp(tmp_path / "my_mlp.onnx")
    (tmp_path / "other").mkdir()
    second = write_mlp(tmp_path / "other" / "my_mlp.onnx")
    result = mlws("models", "--onnx", str(first), "--onnx", str(second))
    assert result.returncode == 2
    assert result.stderr.startswith("mlws models: error: workload name 'my_mlp' is given by both")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workloads", "resnet99"], "unknown workload 'resnet99'; choose from: resnet18"),
        (["--backends", "tvm"], "unknown backend 'tvm'; choose from: onnx, pytorch"),
        (["--precisions", "int4"], "unknown precision 'int4'; choose from: fp32, fp16"),
        (["--precisions", "fp16", "--device", "cpu"], "'fp16' needs a CUDA device"),
    ],
)
def test_profile_bad_input_is_a_one_line_error(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "p.csv"
    result = mlws("profile", "--workloads", "tiny", *args, "--out", str(out))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_profile_and_export_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    result = mlws(
        "profile",
        "--workloads",
        "tiny",
        "--backends",
        "pytorch,onnx",
        "--batch-sizes",
        "1,2",
        "--threads",
        "1",
        "--repeats",
        "3",
        "--min-time",
        "0",
        "--onnx-dir",
        str(tmp_path / "onnx"),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    # progress off a terminal: a plain line per load and per combination, no bar
    assert "[4/4] tiny onnx fp32 bs=2" in result.stderr
    assert "loading tiny on pytorch (fp32, 1 thread)" in result.stderr
    assert "\r" not in result.stderr
    assert len(out.read_text().strip().splitlines()) == 5

    export = ("export-onnx", "--workloads", "tiny", "--out-dir", str(tmp_path / "onnx"))
    first = mlws(*export)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())  # stdout: the path alone
    stamp = path.stat().st_mtime_ns  # exported by the profile run above, reused here
    # stderr: what was done and the parity figures checked when the file was made
    assert "[1/1] tiny: up to date, reused; at export: parity vs PyTorch at batch 1, 8" in (
        first.stderr
    )
    assert "max abs diff" in first.stderr
    assert re.search(r"top-1 agreement \d+% of 9 samples", first.stderr)
    assert mlws(*export).returncode == 0
    assert path.stat().st_mtime_ns == stamp

    forced = mlws(*export, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "tiny: exporting to ONNX and checking it against PyTorch" in forced.stderr
    assert "[1/1] tiny: exported in " in forced.stderr and "max abs diff" in forced.stderr
