"""Wilson intervals agree with scipy; ``needed`` is the smallest n that gives the width asked for."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from cxrkit.evaluate.sample_size import needed, wilson_interval, wilson_width


@pytest.mark.parametrize(("k", "n"), [(0, 1), (19, 20), (95, 100), (100, 100), (3, 7), (480, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_no_studies_give_no_interval():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.parametrize(("p", "width"), [(0.95, 0.05), (0.5, 0.05), (0.8, 0.1), (0.99, 0.02), (0.0, 0.1)])
def test_needed_is_the_smallest_n_reaching_the_width(p, width):
    n = needed(p, width)
    assert wilson_width(p, n) <= width < wilson_width(p, n - 1) if n > 1 else wilson_width(p, n) <= width
    # the textbook Wald size (z^2 p (1 - p) / half-width^2) is the same order for mid-range proportions
    if 0.2 <= p <= 0.8:
        wald = 1.959963984540054**2 * p * (1 - p) / (width / 2) ** 2
        assert abs(n - wald) / wald < 0.02


def test_needed_refuses_impossible_requests():
    for p, width in ((1.5, 0.05), (0.5, 0.0), (0.5, 1.0)):
        with pytest.raises(ValueError, match="expected p in"):
            needed(p, width)
    with pytest.raises(ValueError, match="needs more than 10 studies"):
        needed(0.5, 0.01, most=10)
