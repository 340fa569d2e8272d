"""The gateway's learned service times: a forgetting least-squares line per group."""

from __future__ import annotations

import itertools

import pytest

from predictor.online import OnlineServiceTime, ResidualCorrection, bucket_label, bucket_of
from scheduling.service_time import FixedServiceTime
from tests.factories import make_scheduler

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


# ------------------------------------------------------- ResidualCorrection


def test_bucket_labels_cover_powers_of_two() -> None:
    assert [bucket_of(n) for n in (1, 2, 3, 4, 7, 8, 64)] == [0, 1, 1, 2, 2, 3, 6]
    assert [bucket_label(b) for b in (0, 1, 2, 6)] == ["1", "2-3", "4-7", "64-127"]


def test_first_observation_corrects_fully() -> None:
    # A predictor 10× too slow (e.g. trained at another thread count) is right after one run.
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 100.0))
    assert model.observe(*KEY, 1, 0.010) == pytest.approx(9.0)  # error before the update
    assert model.predict(*KEY, 1) == pytest.approx(0.010)
    assert model.residuals()[(*KEY, 0)].ratio == pytest.approx(0.1)


def test_residual_moves_toward_observed_times_after_a_shift() -> None:
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 10.0), half_life=5)
    for _ in range(20):
        model.observe(*KEY, 4, 0.040)  # the base is right: ratio 1
    assert model.residuals()[(*KEY, 2)].ratio == pytest.approx(1.0)
    ratios, errors = [], []
    for _ in range(30):  # the machine became 2× slower
        errors.append(abs(model.observe(*KEY, 4, 0.080)))
        ratios.append(model.residuals()[(*KEY, 2)].ratio)
    assert all(b > a for a, b in itertools.pairwise(ratios))
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert 1.9 < ratios[-1] <= 2.0
    assert model.predict(*KEY, 5) == pytest.approx(2 * 0.050, rel=0.05)


def test_unseen_bucket_borrows_the_nearest_observed_one() -> None:
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 10.0))
    assert model.predict(*KEY, 32) == pytest.approx(0.320)  # nothing observed: the base
    model.observe(*KEY, 1, 0.005)  # half the base at batch 1
    model.observe(*KEY, 8, 0.240)  # three times the base at batch 8
    assert model.predict(*KEY, 2) == pytest.approx(0.010)  # bucket 1: nearest is bucket 0
    assert model.predict(*KEY, 32) == pytest.approx(3 * 0.320)  # nearest is bucket 3
    other = ("resnet50", "onnx", "fp32")
    assert model.predict(*other, 8) == pytest.approx(0.080)  # other groups are untouched


def test_predictions_stay_monotone_across_buckets() -> None:
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 10.0))
    model.observe(*KEY, 7, 0.140)  # bucket 4-7 is 2× slower than the base
    model.observe(*KEY, 8, 0.040)  # bucket 8-15 is 2× faster
    curve = [model.predict(*KEY, n) for n in range(1, 33)]
    assert all(b >= a for a, b in itertools.pairwise(curve))


def test_quantile_answer_keeps_its_margin_after_correction() -> None:
    mean = FixedServiceTime.linear(0.0, 10.0)
    p95 = FixedServiceTime.linear(0.0, 12.0)
    model = ResidualCorrection(mean, p95)
    model.observe(*KEY, 4, 0.020)  # half the mean prediction
    assert model.plan(*KEY, 4) == pytest.approx(0.024)  # p95 × 0.5, not the observed mean
    assert model.predict(*KEY, 4) == pytest.approx(0.020)  # the corrected mean


def test_without_a_trained_quantile_the_plan_is_the_runs_own_095_quantile() -> None:
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 10.0), half_life=1e9)
    assert model.plan(*KEY, 1) == model.predict(*KEY, 1) == pytest.approx(0.010)
    # 110 runs: 10 to settle, then 96 at 10 ms and 4 slow ones at 20 ms (skewed).
    for _ in range(10):
        model.observe(*KEY, 1, 0.010)
    for i in range(100):
        model.observe(*KEY, 1, 0.020 if i % 25 == 24 else 0.010)
    mean, plan = model.predict(*KEY, 1), model.plan(*KEY, 1)
    assert 0.010 < mean < 0.0107
    # The empirical 0.95 quantile sits at the fast runs' top, not out at mean × e^(1.645 σ).
    assert plan == pytest.approx(0.0101, rel=0.05)
    for _ in range(20):  # slow runs become common: the quantile moves out
        model.observe(*KEY, 1, 0.020)
    assert model.plan(*KEY, 1) > model.predict(*KEY, 1) * 1.2


def test_the_scheduler_follows_the_models_version_without_a_flush() -> None:
    """Each observation bumps the version; the scheduler's memoised predictions and its
    budget caps (max 8 ms per dispatch) follow at its next call."""
    model = ResidualCorrection(FixedServiceTime.linear(0.0, 1.0))  # 1 ms per sample
    sched = make_scheduler(service_model=model, max_dispatch_ms=8.0, split=None)
    key = ("resnet18", "pytorch", "fp32")
    memo = sched.service_model("batch")
    assert memo is not None
    assert sched.dispatch_caps("batch", key)[1] == 8
    assert memo.predict(*key, 4) == pytest.approx(0.004)
    version = model.version
    model.observe(*key, 1, 0.002)  # the lanes run twice as slow
    assert model.version == version + 1
    assert sched.dispatch_caps("batch", key)[1] == 4
    assert memo.predict(*key, 4) == pytest.approx(0.008)


def test_an_online_base_learns_the_same_observations() -> None:
    base = OnlineServiceTime()
    model = ResidualCorrection(base)
    assert model.observe(*KEY, 2, 0.040) is None  # nothing predicted yet: no residual
    assert base.predict(*KEY, 2) == pytest.approx(0.040)
    assert model.predict(*KEY, 2) == pytest.approx(0.040)


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life"):
        ResidualCorrection(OnlineServiceTime(), half_life=0)


def test_the_planning_quantile_matches_numpys_linear_quantile() -> None:
    import numpy as np

    from predictor.online import linear_quantile

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 200):
        values = rng.standard_normal(n).tolist()
        for q in (0.0, 0.5, 0.95, 1.0):
            assert linear_quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
