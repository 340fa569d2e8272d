"""The gateway's learned service times: a forgetting least-squares line per group."""

from __future__ import annotations

import pytest

from predictor.online import OnlineServiceTime
from scheduling.service_time import FixedServiceTime

KEY = ("resnet18", "onnx", "fp32")


def test_fits_the_line_through_observations() -> None:
    model = OnlineServiceTime()
    for n in (1, 4, 16, 1, 4, 16):
        model.observe(*KEY, n, 0.010 + 0.002 * n)
    assert model.predict(*KEY, 8) == pytest.approx(0.026)
    assert model.predict(*KEY, 1) == pytest.approx(0.012)


def test_one_batch_size_predicts_per_sample_time() -> None:
    model = OnlineServiceTime()
    model.observe(*KEY, 2, 0.040)
    assert model.predict(*KEY, 4) == pytest.approx(0.080)


def test_unknown_group_falls_back_to_the_prior_or_zero() -> None:
    assert OnlineServiceTime().predict(*KEY, 8) == 0.0
    prior = FixedServiceTime.linear(10.0, 1.0)
    assert OnlineServiceTime(prior).predict(*KEY, 8) == pytest.approx(0.018)


def test_forgetting_follows_a_shift() -> None:
    model = OnlineServiceTime(half_life=10)
    for _ in range(50):
        model.observe(*KEY, 1, 0.010)
        model.observe(*KEY, 8, 0.080)
    for _ in range(100):  # the machine got twice as slow
        model.observe(*KEY, 1, 0.020)
        model.observe(*KEY, 8, 0.160)
    assert model.predict(*KEY, 4) == pytest.approx(0.080, rel=0.01)


def test_slope_and_intercept_never_go_negative() -> None:
    model = OnlineServiceTime()
    model.observe(*KEY, 1, 0.050)
    model.observe(*KEY, 32, 0.010)  # noise: the big batch looked faster
    assert model.predict(*KEY, 64) >= model.predict(*KEY, 1) >= 0.0
