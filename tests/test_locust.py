"""The Locust load file against a real gateway, and the CSV → summary.json converter.

Locust is never imported here: `import locust` monkey-patches the process with
gevent, which can hang a pytest process that also runs asyncio (see
/work/shared/machine-notes.md). The load test runs Locust's CLI in a
subprocess under a timeout, against an in-process gateway serving `tiny`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen.locust_report import main, read_locust, summarize_locust
from tests.gateway_fixtures import REPO, LiveServer, tiny_config

#: Locust's own run time, and the most a Locust subprocess may take altogether.
RUN_S, TIMEOUT_S = 20, 60
STATS = """\
Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,\
50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%
POST,/infer [batch],40,10,120,130.5,20,900,500,4,1,120,130,140,150,300,400,600,800,900,900,900
POST,/infer [interactive],100,5,8,12.0,2,250,300,10,0.5,8,9,10,11,20,45,90,150,250,250,250
,Aggregated,140,15,10,45.857,2,900,357,14,1.5,10,12,14,16,90,130,300,600,900,900,900
"""
FAILURES = """\
Method,Name,Error,Occurrences,First Seen,Last Seen
POST,/infer [batch],CatchResponseError('SLO missed: e2e 1200 ms > 1000 ms'),6,,
POST,/infer [batch],CatchResponseError('HTTP 429 queue_full: batch queue is full'),3,,
POST,/infer [interactive],CatchResponseError('SLO missed: e2e 130 ms > 100 ms'),2,,
POST,/infer [interactive],CatchResponseError('SLO missed: e2e 150 ms > 100 ms'),2,,
POST,/infer [interactive],CatchResponseError('HTTP 503 shed: shed: late'),1,,
"""
HISTORY = """\
Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,\
99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,\
Total Average Response Time,Total Min Response Time,Total Max Response Time,\
Total Average Content Size
1000,0,,Aggregated,0,0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0,0,0,0,0,0
1005,4,,Aggregated,14,1,10,12,14,16,90,130,300,600,900,900,900,70,7,10,45,2,900,357
1010,4,,Aggregated,14,1.5,10,12,14,16,90,130,300,600,900,900,900,140,15,10,45,2,900,357
"""


def write_run(tmp_path: Path, with_json: bool) -> Path:
    """A hand-written Locust run; returns its CSV prefix."""
    prefix = tmp_path / "run"
    Path(f"{prefix}_stats.csv").write_text(STATS)
    Path(f"{prefix}_failures.csv").write_text(FAILURES)
    Path(f"{prefix}_stats_history.csv").write_text(HISTORY)
    if with_json:  # final counts: the CSVs missed the last second (4 + 1 requests)
        entries = [
            {"name": "/infer [batch]", "num_requests": 44, "num_failures": 11},
            {"name": "/infer [interactive]", "num_requests": 101, "num_failures": 5},
        ]
        for e in entries:
            e.update(method="POST", start_time=100.0, last_request_timestamp=112.5)
        Path(f"{prefix}.json").write_text(json.dumps(entries))
    return prefix


# ------------------------------------------------------------------ converter, by hand
def test_converter_from_csvs_only(tmp_path: Path) -> None:
    summary = summarize_locust(read_locust(write_run(tmp_path, with_json=False)))
    assert summary["source"] == "locust" and summary["window_s"] == 10.0  # history: 1000→1010
    batch, inter = summary["classes"]["batch"], summary["classes"]["interactive"]
    assert batch["latency_ms"]["e2e"] == {
        "p50": 120.0,
        "p95": 400.0,
        "p99": 800.0,
        "mean": 130.5,
        "max": 900.0,
    }
    # 10 failures: 6 SLO misses, 3 queue_full, and 1 the failures CSV had not seen yet.
    assert batch["jobs"] == 40 and batch["slo"]["attainment"] == 0.75
    assert batch["slo"]["slo_missed"] == 6 and batch["slo"]["errors"] == {"queue_full": 3}
    assert batch["slo"]["unattributed"] == 1 and batch["completed"] == 36
    assert batch["throughput"]["jobs_per_s"] == pytest.approx(3.6)
    assert batch["slo_ms"] == 1000.0
    assert inter["latency_ms"]["e2e"]["p95"] == 45.0 and inter["latency_ms"]["e2e"]["p99"] == 150.0
    assert inter["slo"]["attainment"] == 0.95 and inter["slo"]["slo_missed"] == 4
    assert inter["slo"]["errors"] == {"shed": 1} and inter["completed"] == 99
    assert inter["slo_ms"] == 100.0
    assert summary["slo_ms"] == {"interactive": 100.0, "batch": 1000.0}  # per class, not one
    assert summary["batch_to_interactive_wait_ratio"] is None and "fairness" not in summary
    assert summary["jobs"] == 140 and summary["slo"]["attainment"] == pytest.approx(125 / 140)
    assert summary["latency_ms"]["e2e"]["p99"] == 600.0  # the Aggregated row
    assert summary["outcomes"] == {"ok": 135, "queue_full": 3, "shed": 1, "unattributed": 1}
    assert summary["throughput"]["jobs_per_s"] == pytest.approx(13.5)
    assert summary["run"]["users"] == 4
    assert summary["latency_ms"]["wait"]["p50"] is None  # Locust cannot know it


def test_json_counts_win_and_cli_writes_summary(tmp_path: Path, capsys) -> None:
    prefix = write_run(tmp_path, with_json=True)
    # --json names the file as Locust was told it (it appends ".json" itself).
    assert main(["--csv-prefix", str(prefix), "--json", str(prefix), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    batch, inter = summary["classes"]["batch"], summary["classes"]["interactive"]
    assert summary["window_s"] == 12.5 and summary["jobs"] == 145
    assert batch["jobs"] == 44 and batch["slo"]["violations"] == 11
    assert batch["slo"]["attainment"] == 0.75 and batch["slo"]["unattributed"] == 2
    assert batch["throughput"]["jobs_per_s"] == pytest.approx(39 / 12.5)
    assert inter["slo"]["attainment"] == pytest.approx(96 / 101)
    assert batch["latency_ms"]["e2e"]["p95"] == 400.0  # percentiles stay the CSV's
    out = capsys.readouterr().out
    assert "attainment=75.0%" in out and "summary.json" in out


def test_missing_csv_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["--csv-prefix", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope_stats.csv not found" in err


# ------------------------------------------------------------------ the locustfile's logic
#: Run in a child: importing the locustfile imports locust (gevent's monkey-patching).
LOCUSTFILE_CHECKS = """
import json, random
from loadgen.locustfile import MAX_LAG_S, Schedule, judge
s = Schedule(4.0, poisson=False, rng=random.Random(1))
waits = [s.wait(10.0 + 0.25 * i)[0] for i in range(3)]   # on schedule: 0.25 s apart
late = s.wait(20.0)                                     # 9 s late: skip, don't burst
p = Schedule(50.0, poisson=True, rng=random.Random(2))
gaps, now = [], 0.0
for _ in range(2000):
    wait, _ = p.wait(now)
    now += wait
    gaps.append(wait)
ok = json.dumps({"slo_met": True, "timing": {"e2e_ms": 5}, "slo_ms": 100})
miss = json.dumps({"slo_met": False, "timing": {"e2e_ms": 153.4}, "slo_ms": 100.0})
full = json.dumps({"error": "queue_full", "detail": "batch queue is full"})
print(json.dumps({
    "waits": waits, "late": late, "lag": MAX_LAG_S, "mean_gap": sum(gaps) / len(gaps),
    "judged": [judge(200, ok), judge(200, miss), judge(429, full), judge(0, "refused")],
}))
"""


def test_schedule_and_failure_messages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOCUSTFILE_CHECKS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["waits"] == pytest.approx([0.25, 0.25, 0.25])
    wait, dropped = got["late"]
    # Due at 11.0, seen at 20.0: arrivals more than MAX_LAG_S behind are dropped, the
    # rest are sent back to back (wait 0) to catch up.
    assert wait == 0.0 and dropped == int((20.0 - got["lag"] - 11.0) * 4)  # 11.0 → 18.0
    assert got["mean_gap"] == pytest.approx(1 / 50, rel=0.1)  # Poisson at 50/s
    assert got["judged"] == [
        None,
        "SLO missed: e2e 153 ms > 100 ms",
        "HTTP 429 queue_full: batch queue is full",
        "HTTP 0 connection_error: refused",
    ]


# ------------------------------------------------------------------ a real run
@pytest.fixture(scope="module")
def gateway(onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gateway with access control: the users must send the token of --mlws-token-file."""
    token = tmp_path_factory.mktemp("token") / "inference.token"
    token.write_text(secrets.token_urlsafe(32))
    auth = {"tokens": [{"name": "locust", "roles": ["inference"], "file": str(token)}]}
    with LiveServer(tiny_config(onnx_dir, auth=auth)) as live:
        yield live


def test_headless_locust_run_converts(gateway: LiveServer, tmp_path: Path, capsys) -> None:
    prefix = tmp_path / "run"
    env = {
        **os.environ,
        "MLWS_MODEL": "tiny",
        # A 2 ms budget no batch job can meet (batching alone waits 10 ms): SLO misses
        # must show up as Locust failures and in the converted attainment.
        "MLWS_BATCH_SLO_MS": "2",
        "MLWS_BATCH_MIN": "2",
        "MLWS_BATCH_MAX": "8",
        "MLWS_TOKEN_FILE": str(gateway.config.auth.tokens[0].file),
    }
    cmd = [sys.executable, "-m", "locust", "-f", "loadgen/locustfile.py", "--headless"]
    cmd += ["-u", "4", "-r", "4", "-t", f"{RUN_S}s", "--host", gateway.base_url]
    cmd += ["--csv", str(prefix), "--json-file", str(prefix), "--only-summary"]
    cmd += ["--exit-code-on-error", "0", "--loglevel", "WARNING"]
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for suffix in ("_stats.csv", "_failures.csv", "_stats_history.csv", ".json"):
        assert Path(f"{prefix}{suffix}").is_file(), suffix
    assert "SLO missed: e2e" in Path(f"{prefix}_failures.csv").read_text()

    assert main(["--csv-prefix", str(prefix), "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    final = json.loads(Path(f"{prefix}.json").read_text())
    assert summary["jobs"] == sum(e["num_requests"] for e in final)
    for cls in ("interactive", "batch"):
        group = summary["classes"][cls]
        assert group["jobs"] > 0, cls
        e2e = group["latency_ms"]["e2e"]
        assert 0 < e2e["p50"] <= e2e["p95"] <= e2e["p99"], (cls, e2e)
        assert 0.0 <= group["slo"]["attainment"] <= 1.0
    batch, inter = summary["classes"]["batch"], summary["classes"]["interactive"]
    assert batch["slo"]["attainment"] < 1.0 and batch["slo"]["slo_missed"] > 0
    assert batch["slo_ms"] == 2.0
    assert inter["slo"]["attainment"] > batch["slo"]["attainment"]
    assert "interactive" in capsys.readouterr().out
