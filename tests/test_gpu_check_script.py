"""scripts/gpu-check.sh as far as a machine without a GPU can run it: its refusals, its
flow once a GPU is reported, and the summary it closes with, read from a real pytest run.

nvidia-smi cannot run here, so the refusal tests put a stand-in for it on the PATH:
the only way to show the script what a broken or old driver answers.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from predictor.profile_rows import PROFILE_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
SUMMARY = REPO / "scripts" / "gpu_check_summary.py"


def fake_nvidia_smi(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return bin_dir


def run_check(path: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": path, "GPU_CHECK_OUT": str(tmp_path / "out"), **env}
    # From elsewhere than the repository: the script finds its own way there.
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("script", ["gpu-check.sh", "install-cuda-variants.sh"])
def test_scripts_parse(script: str) -> None:
    proc = subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], capture_output=True)
    assert proc.returncode == 0, proc.stderr


def test_refuses_in_one_line_without_nvidia_smi(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_check(str(empty), tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "gpu-check: no usable CUDA GPU: nvidia-smi not found "
        "(run this on a machine with an NVIDIA GPU and its driver)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
            'driver." >&2; exit 9',
            "nvidia-smi failed: NVIDIA-SMI has failed because it couldn't communicate",
        ),
        ("echo 'No devices were found'", "nvidia-smi lists no GPU (it said: No devices"),
        (
            "echo 'Tesla T4, 535.104.05, 15360 MiB'",
            "driver 535.104.05 on Tesla T4 is older than 580, which torch's CUDA 13.0",
        ),
    ],
)
def test_refuses_a_failing_empty_or_old_driver(answer: str, message: str, tmp_path: Path) -> None:
    proc = run_check(str(fake_nvidia_smi(tmp_path / "bin", answer)), tmp_path)
    assert proc.returncode == 3
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"gpu-check: no usable CUDA GPU: {message}")


def test_a_spent_budget_still_ends_in_the_summary(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA H200, 580.159.03, 143771 MiB'")
    proc = run_check(f"{bin_dir}:{os.environ['PATH']}", tmp_path, GPU_CHECK_BUDGET_S="0")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "gpu-check: NVIDIA H200, driver 580.159.03" in out
    assert "==> install: not run: the time budget is spent" in out
    assert "PROBLEM      step install: not run: the time budget is spent" in out
    assert out.rstrip().endswith("RESULT: FAIL")


def pytest_junit(out: Path, name: str, tests: list[str], **env: str) -> None:
    """A real pytest run's JUnit XML, as the check writes it."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    cmd.append(f"--junitxml={out / name}")
    subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, timeout=240)


def write_profile(path: Path, columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for batch, p50, resident, peak in [(1, 1.25, 90.0, 3.0), (8, 2.5, 90.0, 24.0)]:
            row = dict.fromkeys(columns, "")
            row.update(workload="resnet18", backend="pytorch", precision="fp16", device="cuda")
            row.update(batch_size=batch)
            row.update(p50_ms=p50, samples_per_s=batch * 1000 / p50, peak_mem_mb=peak)
            row.update(resident_mb=resident, per_sample_mb=3.0)
            writer.writerow(row)


def summarize(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SUMMARY), "summary", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_summary_passes_only_without_failures_or_skipped_cuda_tests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "probe.json").write_text(json.dumps({"nvidia_smi": "NVIDIA H200, 580.159.03"}))
    (out / "steps.tsv").write_text("install\tok\t3\nprofile\tok\t50\n")
    write_profile(out / "profile-cuda.csv", PROFILE_COLUMNS)
    cheap = "tests/test_cuda_paths_on_cpu.py::test_fp16_on_device_cpu_is_refused_even_with_a_gpu"
    pytest_junit(out, "tests-cuda.xml", [cheap])
    passed = summarize(out)
    assert passed.returncode == 0, passed.stdout
    assert "tests        cuda: 1 passed, 0 failed, 0 skipped" in passed.stdout
    assert "resident_MiB  per_sample_MiB  peak_mem_MiB" in passed.stdout
    assert passed.stdout.rstrip().endswith("RESULT: PASS")

    # The CUDA tests on this machine: skipped without MLWS_REQUIRE_CUDA, failed with it.
    device = "tests/test_cuda.py::test_auto_device_picks_cuda_and_keeps_float32_at_the_boundary"
    pytest_junit(out, "tests-cuda.xml", [device])
    skipped = summarize(out)
    assert skipped.returncode == 1
    assert "cuda: 0 passed, 0 failed, 2 skipped" in skipped.stdout
    assert "PROBLEM      cuda: 2 CUDA tests skipped" in skipped.stdout
    pytest_junit(out, "tests-cuda.xml", [device], MLWS_REQUIRE_CUDA="1")
    failed = summarize(out)
    assert "cuda: 0 passed, 2 failed, 0 skipped" in failed.stdout
    assert "PROBLEM      cuda: 2 failed" in failed.stdout
    assert failed.stdout.rstrip().endswith("RESULT: FAIL")


def test_summary_reads_a_profile_without_memory_columns(tmp_path: Path) -> None:
    older = tuple(c for c in PROFILE_COLUMNS if c not in ("resident_mb", "per_sample_mb"))
    write_profile(tmp_path / "profile-cuda.csv", older)
    proc = summarize(tmp_path)
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("profile "))
    assert header.split()[1:] == [
        "workload",
        "backend",
        "precision",
        "batch",
        "p50_ms",
        "samples/s",
        "peak_mem_MiB",
    ]
    assert any(line.split()[-3:] == ["1.25", "800", "3.0"] for line in lines)
    # Nothing else was left there: not probed, and no tests ran, which fails the check.
    assert "environment  (not probed)" in lines
    assert "PROBLEM      no CUDA test results (tests-cuda.xml)" in lines
    assert proc.returncode == 1
