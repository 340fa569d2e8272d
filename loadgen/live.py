"""`mode: live`: the experiment's arrivals sent to a real gateway over HTTP.

The gateway either runs already (`live.url` / `--url`) or is started as a
child process with the experiment's serving config (models, lanes, scheduler,
SLOs: serving/config.py), so the live run and its simulated twin make decisions
under the same config.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from loadgen.client import run_load
from loadgen.config import ExperimentConfig
from loadgen.gateway_process import gateway
from predictor.progress import Progress, say
from scheduling.job import JOB_CLASSES, Job
from scheduling.simulator import Arrival


def gateway_config_for(config: ExperimentConfig) -> dict[str, Any]:
    """The gateway config of a started gateway: the experiment's serving part as it is,
    with room in a request for the largest job the traffic sends."""
    sizes = (config.batch_sizes.interactive, config.batch_sizes.batch)
    return {
        **config.serving_data(),
        "max_request_samples": int(max(d.support()[0].max() for d in sizes)),
    }


def run_live(
    config: ExperimentConfig,
    arrivals: Sequence[Arrival],
    url: str | None = None,
    *,
    show_progress: bool = False,
) -> list[Job]:
    """Send `arrivals` open-loop to the gateway at `url` (or a started one).

    With `show_progress`, the gateway's start and the answers are reported on stderr.
    """
    url = url or config.live.url
    timeout = config.live.request_timeout_s
    note = say if show_progress else _quiet
    if url:
        return _send(url.rstrip("/"), arrivals, timeout, show_progress)
    note(
        "starting a gateway for the live run: it exports, loads and calibrates its models "
        f"before it is ready (at most {config.live.ready_timeout_s:g} s)"
    )
    started = time.monotonic()
    with gateway(gateway_config_for(config), ready_timeout_s=config.live.ready_timeout_s) as base:
        note(f"gateway ready at {base} after {time.monotonic() - started:.1f} s")
        return _send(base, arrivals, timeout, show_progress)


def _send(base: str, arrivals: Sequence[Arrival], timeout: float, show: bool) -> list[Job]:
    if not show:
        return run_load(base, arrivals, timeout_s=timeout)
    with Progress(len(arrivals), f"live requests to {base}", unit="answer", steps=False) as bar:
        return run_load(base, arrivals, timeout_s=timeout, on_answer=bar.update)


def _quiet(_text: str) -> None:
    """`say` when progress is off."""


def sim_vs_live(live: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    """Per class: live and simulated e2e P50/P99 (ms) and live − sim, plus attainment."""
    out: dict[str, Any] = {}
    for cls in JOB_CLASSES:
        lc, sc = live["classes"].get(cls), sim["classes"].get(cls)
        if not lc or not sc:
            continue
        row: dict[str, Any] = {}
        for q in ("p50", "p99"):
            lv, sv = lc["latency_ms"]["e2e"][q], sc["latency_ms"]["e2e"][q]
            row[f"{q}_ms"] = {
                "live": lv,
                "sim": sv,
                "diff": None if lv is None or sv is None else lv - sv,
            }
        row["slo_attainment"] = {"live": lc["slo"]["attainment"], "sim": sc["slo"]["attainment"]}
        out[cls] = row
    return out


def format_sim_vs_live(diff: dict[str, Any]) -> str:
    """Human lines: per class, live vs simulated P50/P99."""
    lines = ["sim vs live (e2e):"]
    for cls, row in diff.items():
        parts = []
        for q in ("p50", "p99"):
            v = row[f"{q}_ms"]
            if v["diff"] is None:
                continue
            parts.append(f"{q} live {v['live']:.1f} / sim {v['sim']:.1f} ms ({v['diff']:+.1f})")
        lines.append(f"  {cls:<11} " + ", ".join(parts))
    return "\n".join(lines)
