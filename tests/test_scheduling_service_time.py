"""FixedServiceTime (interpolation, extrapolation) and CachedServiceTime."""

from __future__ import annotations

import pytest

from scheduling.service_time import CachedServiceTime, FixedServiceTime


def test_linear_pair_is_fixed_plus_per_sample_in_ms() -> None:
    m = FixedServiceTime({"resnet18": (8.0, 3.5)})
    assert m.predict("resnet18", "pytorch", "fp32", 1) == pytest.approx(0.0115)
    assert m.predict("resnet18", "onnxruntime", "fp16", 10) == pytest.approx(0.043)


def test_table_interpolates_and_extrapolates_linearly() -> None:
    m = FixedServiceTime({"vit": {1: 0.010, 4: 0.016, 8: 0.032}})
    p = m.predict
    assert p("vit", "b", "p", 1) == pytest.approx(0.010)
    assert p("vit", "b", "p", 2) == pytest.approx(0.012)
    assert p("vit", "b", "p", 6) == pytest.approx(0.024)
    assert p("vit", "b", "p", 8) == pytest.approx(0.032)
    assert p("vit", "b", "p", 16) == pytest.approx(0.064)  # along the last segment
    assert p("vit", "b", "p", 0) == pytest.approx(0.008)  # along the first
    steep = FixedServiceTime({"x": {10: 0.001, 20: 0.101}})
    assert steep.predict("x", "b", "p", 1) == 0.0  # never negative


def test_fallback_and_unknown_workload() -> None:
    m = FixedServiceTime.linear(10.0, 1.0)
    assert m.predict("anything", "b", "p", 5) == pytest.approx(0.015)
    with pytest.raises(KeyError, match="resnet50"):
        FixedServiceTime({"resnet18": (1.0, 1.0)}).predict("resnet50", "b", "p", 1)


@pytest.mark.parametrize("entry", [{1: 0.01}, {1: -0.01, 2: 0.02}, (-1.0, 1.0)])
def test_bad_tables_are_refused(entry) -> None:
    with pytest.raises(ValueError):
        FixedServiceTime({"m": entry})


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def predict(self, workload: str, backend: str, precision: str, samples: int) -> float:
        self.calls += 1
        return samples * 0.001


def test_cache_asks_once_per_question_and_can_be_cleared() -> None:
    inner = Counting()
    m = CachedServiceTime(inner, max_entries=2)
    assert m.predict("a", "b", "c", 3) == 0.003
    assert m.predict("a", "b", "c", 3) == 0.003
    assert inner.calls == 1
    m.predict("a", "b", "c", 4)
    m.predict("a", "b", "c", 5)  # over the bound: memo starts afresh
    assert inner.calls == 3
    m.clear()
    m.predict("a", "b", "c", 3)
    assert inner.calls == 4
