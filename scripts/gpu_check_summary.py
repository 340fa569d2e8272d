"""The two Python halves of scripts/gpu-check.sh: what the GPU and runtimes are, and the
closing summary of the check.

    python scripts/gpu_check_summary.py probe OUT.json
    python scripts/gpu_check_summary.py summary DIR

`probe` (run with the project's venv) writes what torch, onnxruntime and nvidia-smi say
to OUT.json, and exits 1 when torch sees no CUDA device: every test after it would be
skipped. `summary` reads what the check left in DIR (probe.json, steps.tsv,
tests-*.xml from pytest --junitxml, profile-cuda.csv from `mlws profile`) and prints
one block; exit 1 when anything failed, a CUDA test was skipped or a profile row is
missing. Standard library only, so the summary still prints when the install failed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

#: The test run whose skips are legitimate on a GPU machine: the CPU-only refusals.
SKIPS_EXPECTED = "tests-cpu-paths.xml"
#: The profile's memory columns, in the order printed; absent ones are left out.
MEMORY_COLUMNS = ("resident_mb", "per_sample_mb", "peak_mem_mb")


def probe(out: Path) -> int:
    import onnxruntime as ort
    import torch

    facts: dict[str, object] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "torch_sees_cuda": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "onnxruntime_package": _ort_package(),
        "ort_providers": ort.get_available_providers(),
        "nvidia_smi": _nvidia_smi(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["device"] = props.name
        facts["device_mib"] = props.total_memory // 2**20
    out.write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts))
    if not torch.cuda.is_available():
        print(
            f"gpu-check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
            "device although nvidia-smi does: is the driver older than that CUDA needs?",
            file=sys.stderr,
        )
        return 1
    return 0


def _ort_package() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return " + ".join(found)


def _nvidia_smi() -> str:
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(nvidia-smi: {exc})"


@dataclass
class RunCounts:
    """One pytest run, from its JUnit XML."""

    name: str
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return f"{self.passed} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def read_junit(path: Path) -> RunCounts:
    counts = RunCounts(path.stem.removeprefix("tests-"))
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts.failed.append(test)
        elif (skip := case.find("skipped")) is not None:
            counts.skipped.append(f"{test}: {skip.get('message', '')}")
        else:
            counts.passed += 1
    return counts


def profile_lines(path: Path) -> tuple[list[str], int, int]:
    """The profile's rows as aligned lines, how many rows there are, how many not on cuda."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [], 0, 0
    memory = [c for c in MEMORY_COLUMNS if c in rows[0]]
    head = ["workload", "backend", "precision", "batch", "p50_ms", "samples/s"]
    table = [head + [c.replace("_mb", "_MiB") for c in memory]]
    for r in rows:
        cells = [r["workload"], r["backend"], r["precision"], r["batch_size"]]
        cells += [_num(r["p50_ms"], 2), _num(r["samples_per_s"], 0)]
        table.append(cells + [_num(r[c], 2 if c == "per_sample_mb" else 1) for c in memory])
    widths = [max(len(row[i]) for row in table) for i in range(len(head) + len(memory))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    if not memory:
        lines.append("(this profile has no memory columns)")
    return lines, len(rows), sum(r["device"] != "cuda" for r in rows)


def _num(cell: str, digits: int) -> str:
    try:
        value = float(cell)
    except ValueError:
        return "-"
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def environment_lines(facts: dict[str, object]) -> list[str]:
    providers = ", ".join(str(p) for p in facts.get("ort_providers") or [])  # type: ignore[union-attr]
    return [
        f"GPU          {facts.get('nvidia_smi', '?')} (name, driver, memory)",
        f"torch        {facts.get('torch')} (CUDA {facts.get('torch_cuda')}, cuDNN "
        f"{facts.get('cudnn')}), sees the GPU: {facts.get('torch_sees_cuda')}",
        f"onnxruntime  {facts.get('onnxruntime_package')} (providers: {providers})",
    ]


def summary(out: Path) -> int:
    """Print the block; 1 when something failed, a CUDA test skipped or rows are missing."""
    problems: list[str] = []
    lines = ["", "=" * 28 + " gpu-check summary " + "=" * 28]
    probe_file = out / "probe.json"
    facts = json.loads(probe_file.read_text()) if probe_file.exists() else {}
    lines += environment_lines(facts) if facts else ["environment  (not probed)"]
    steps = _steps(out / "steps.tsv")
    done = " | ".join(f"{n} {s} ({t} s)" for n, s, t in steps)
    lines.append("steps        " + (done or "(none recorded)"))
    problems += [f"step {n}: {s}" for n, s, _ in steps if s != "ok"]
    for junit in sorted(out.glob("tests-*.xml")):
        counts = read_junit(junit)
        lines.append(f"tests        {counts.name}: {counts.line}")
        lines += [f"  FAILED {t}" for t in counts.failed]
        problems += [f"{counts.name}: {len(counts.failed)} failed"] if counts.failed else []
        if junit.name != SKIPS_EXPECTED and counts.skipped:
            lines += [f"  SKIPPED {t}" for t in counts.skipped]
            problems.append(f"{counts.name}: {len(counts.skipped)} CUDA tests skipped")
    if not (out / "tests-cuda.xml").exists():
        problems.append("no CUDA test results (tests-cuda.xml)")
    profile_file = out / "profile-cuda.csv"
    rows, n, off_gpu = profile_lines(profile_file) if profile_file.exists() else ([], 0, 0)
    lines += ["profile      " + (rows[0] if rows else "(no rows)")]
    lines += ["             " + r for r in rows[1:]]
    if n == 0:
        problems.append("the CUDA profile has no rows")
    if off_gpu:
        problems.append(f"{off_gpu} profile rows did not run on cuda")
    lines += [f"PROBLEM      {p}" for p in problems]
    lines.append("RESULT: " + ("FAIL" if problems else "PASS"))
    print("\n".join(lines))
    return 1 if problems else 0


def _steps(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t")[:3]) for line in path.read_text().splitlines() if line]  # type: ignore[misc]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "probe":
        return probe(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "summary":
        return summary(Path(argv[1]))
    print("usage: gpu_check_summary.py probe OUT.json | summary DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
