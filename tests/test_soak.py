"""The soak script's smoke run: it starts the default gateway with process lanes,
sends mixed load for a minute, and reports memory and p99 per window. The real
soak (30 minutes) is a benchmark; this only checks that it runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_one_minute_soak_completes_with_every_request_answered() -> None:
    cmd = [sys.executable, "benchmarks/soak.py", "--minutes", "1", "--window-s", "20"]
    cmd += ["--warmup-min", "0", "--capacity-s", "3", "--load", "0.3"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["windows"]) == 3
    assert report["verdict"]["unanswered"] == 0
    assert all(w["server_rss_mib"] > 0 and w["workers_rss_mib"] > 0 for w in report["windows"])
    assert "verdict:" in done.stdout
