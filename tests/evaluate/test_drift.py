"""Drift statistics against scipy and explicit sums; the combined signal's false-alarm rate on fresh
in-distribution windows and its power on shifted ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare, ks_2samp

from cxrkit.evaluate.drift import Window, chi2_statistic, fit_drift, ks_statistic, mmd2, window_signal


def test_ks_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=170)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_statistic(a, a) == 0.0


def test_mmd2_equals_the_explicit_kernel_sums():
    rng = np.random.default_rng(1)
    x, y, h = rng.normal(size=(7, 3)), rng.normal(1, 1, size=(5, 3)), 1.7

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * h * h))

    want = (
        np.mean([[k(a, b) for b in x] for a in x])
        + np.mean([[k(a, b) for b in y] for a in y])
        - 2 * np.mean([[k(a, b) for b in y] for a in x])
    )
    assert mmd2(x, y, h) == pytest.approx(want, rel=1e-10)


def test_chi2_equals_scipy_on_known_categories_and_punishes_a_new_one():
    ref = {"PA": 0.6, "AP": 0.4}
    values = ["PA"] * 50 + ["AP"] * 50
    # the extra "unknown" cell has 0 observed and a small expected count
    floor = 0.5 / 100
    probs = np.array([0.6, 0.4, floor]) / (1 + floor)
    want = chisquare([50, 50, 0], probs * 100).statistic
    assert chi2_statistic(values, ref) == pytest.approx(want)
    assert chi2_statistic(values[:95] + ["LL"] * 5, ref) > 5 * chi2_statistic(values, ref)


def _window(rng, n, shift=0.0, views=("PA", "AP")):
    summary = rng.normal(shift, 1, size=(n, 4))
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + shift)))
    return Window(
        summary, rng.normal(shift, 1, size=n), scores, scores > 0.5, {"view": list(rng.choice(views, n))}
    )


def test_the_signal_alarms_rarely_on_fresh_windows_and_almost_always_on_shifted_ones():
    rng = np.random.default_rng(2)
    drift = fit_drift(_window(rng, 2000), window=200, simulations=200)
    fresh = np.mean([window_signal(_window(rng, 200), drift)["alarm"] for _ in range(100)])
    shifted = [window_signal(_window(rng, 200, 0.5), drift) for _ in range(50)]
    assert fresh <= 0.12
    assert np.mean([s["alarm"] for s in shifted]) >= 0.9
    lateral = window_signal(_window(rng, 200, views=("PA", "AP", "LL")), drift)
    assert lateral["alarm"] and lateral["driver"] == "categories"


def test_too_small_a_reference_is_refused():
    with pytest.raises(ValueError, match="at least 20"):
        fit_drift(_window(np.random.default_rng(0), 10))


def test_pixel_stats_are_the_plain_numbers():
    from cxrkit.evaluate.drift import pixel_stats

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (2, 16, 16)).astype(np.uint8)
    got = pixel_stats(img)[1]
    x = img[1] / 255.0
    lap = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]).mean()
    grad = (np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()) / 2
    steps = np.abs(np.diff(x, axis=1))
    block = steps[:, 7::8].mean() / (np.delete(steps, np.s_[7::8], axis=1).mean() + 1e-6)
    want = [x.mean(), x.std(), *np.percentile(x, [5, 50, 95]), grad, lap, block]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_change_only_the_pixels_show_alarms_through_the_pixel_component():
    """Features identical (the network normalised the change away), the images' contrast changed."""
    rng = np.random.default_rng(4)

    def window(n, contrast=1.0):
        w = _window(rng, n)
        w.pixels = np.column_stack([rng.normal(0.5, 0.05, n), rng.normal(0.2 * contrast, 0.02, n)])
        return w

    drift = fit_drift(window(2000), window=200)
    shifted = window_signal(window(200, contrast=0.7), drift)
    assert shifted["alarm"] and shifted["driver"] == "pixels"
    fresh = np.mean([window_signal(window(200), drift)["alarm"] for _ in range(40)])
    assert fresh <= 0.15
