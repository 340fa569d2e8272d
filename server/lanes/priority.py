"""A lane's OS scheduling priority, taken by its worker thread before any runner exists."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("mlws.lanes")


def apply_priority(priority: str, lane: int) -> None:
    """Give the calling thread the lane's OS scheduling priority.

    "low": SCHED_IDLE on Linux (nice 19 elsewhere): the thread runs only on CPU
    time no normal-priority thread wants, and is preempted at once when one
    wakes up (an interactive lane, the event loop). An unprivileged thread may
    always lower its own priority, never raise it back, so lanes keep theirs.
    """
    if priority != "low":
        return
    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
        else:
            os.nice(19)
    except OSError as exc:
        log.warning("lane %d: cannot lower its priority (%s); it competes as normal", lane, exc)
