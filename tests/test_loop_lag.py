"""The event-loop lag that admission keeps in hand: a quantile of recent lateness."""

from __future__ import annotations

import pytest

from server.loop_lag import LoopLag


def test_quantile_of_recent_lateness() -> None:
    lag = LoopLag(window=100)
    assert lag.quantile() == 0.0
    for i in range(100):
        lag.add(i / 1000)  # 0..99 ms
    assert lag.quantile(95) == pytest.approx(0.094)  # nearest rank: the 95th of 100
    lag.add(-0.001)  # an early timer counts as on time
    assert min(lag._samples) == 0.0


def test_old_samples_leave_the_window() -> None:
    lag = LoopLag(window=10)
    for _ in range(10):
        lag.add(0.5)
    for _ in range(10):
        lag.add(0.001)
    assert lag.quantile(95) == pytest.approx(0.001)
