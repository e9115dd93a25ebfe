"""Reliability curve agrees with scikit-learn; ECE is zero for a calibrated predictor and large otherwise."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from cxrkit.evaluate.calibration import (
    expected_calibration_error,
    fit_softmax_temperature,
    fit_temperature,
    fit_temperatures,
    logits_to_probs,
    per_label_ece,
    reliability_curve,
    reliability_table,
)


def test_reliability_curve_matches_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    y = (rng.random(2000) < p**2).astype(float)
    curve = reliability_curve(y, p, 10)
    obs, pred = calibration_curve(y, p, n_bins=10)
    assert np.allclose(curve["observed"], obs) and np.allclose(curve["mean_predicted"], pred)
    assert curve["count"].sum() == 2000


def test_ece_is_the_count_weighted_gap_over_bins():
    # three bins with very different counts: an unweighted mean of the gaps would be 0.3, not 0.1
    p = np.r_[np.full(80, 0.15), np.full(15, 0.55), np.full(5, 0.95)]
    y = np.r_[np.ones(12), np.zeros(68), np.ones(6), np.zeros(9), np.zeros(5)].astype(float)
    gaps = {0.15: abs(12 / 80 - 0.15), 0.55: abs(6 / 15 - 0.55), 0.95: abs(0 / 5 - 0.95)}
    weighted = (80 * gaps[0.15] + 15 * gaps[0.55] + 5 * gaps[0.95]) / 100
    assert expected_calibration_error(y, p) == pytest.approx(weighted)
    assert weighted == pytest.approx(0.07) and np.mean(list(gaps.values())) > 0.3
    # a value on an inner edge goes to the upper bin; 1.0 stays in the last one
    curve = reliability_curve(np.array([1.0, 0.0, 1.0]), np.array([0.2, 0.2, 1.0]), 5)
    assert list(curve["bin_low"]) == pytest.approx([0.2, 0.8]) and list(curve["count"]) == [2, 1]
    assert per_label_ece(np.c_[y, y], np.c_[p, np.full(100, 0.18)]) == pytest.approx([weighted, 0.0])


def test_ece_small_when_calibrated_large_when_not_and_nan_ignored():
    rng = np.random.default_rng(1)
    p = rng.random((20000, 2))
    y = (rng.random((20000, 2)) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2
    y[:100, 0] = np.nan
    assert np.isfinite(per_label_ece(y, p)).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_curve(y, p * 2)


def test_defaults_ten_bins_and_nan_predictions_ignored():
    rng = np.random.default_rng(3)
    p, y = rng.random(500), (rng.random(500) < 0.5).astype(float)
    assert reliability_curve(y, p).equals(reliability_curve(y, p, 10)) and len(reliability_curve(y, p)) == 10
    assert expected_calibration_error(y, p) == expected_calibration_error(y, p, 10)
    assert per_label_ece(y[:, None], p[:, None]) == pytest.approx([expected_calibration_error(y, p, 10)])
    p_nan = p.copy()
    p_nan[:50] = np.nan
    assert reliability_curve(y, p_nan)["count"].sum() == 450
    table = reliability_table(y, p)
    assert table.equals(reliability_table(y, p, 10)) and list(table["predicted"][:2]) == [
        "0.0-0.1",
        "0.1-0.2",
    ]
    assert table["observed_positive_rate"].tolist() == pytest.approx(
        reliability_curve(y, p)["observed"].tolist()
    )


def _nll(z, y, t):
    return np.mean(np.logaddexp(0, z / t) - y * z / t)


def test_temperature_minimises_the_nll_found_by_a_fine_grid():
    rng = np.random.default_rng(5)
    y = (rng.random(4000) < 0.4).astype(float)
    z = 3.0 * (2 * y - 1) + rng.normal(0, 3, 4000)  # over-confident logits: T > 1
    grid = np.exp(np.linspace(np.log(0.25), np.log(20), 4001))
    best = grid[np.argmin([_nll(z, y, t) for t in grid])]
    assert fit_temperature(z, y) == pytest.approx(best, rel=2e-3) and best > 1.2
    y_nan = np.r_[y, np.full(50, np.nan)]
    assert fit_temperature(np.r_[z, np.full(50, 40.0)], y_nan) == pytest.approx(fit_temperature(z, y))
    assert fit_temperatures(np.c_[z, z], np.c_[y, y]) == pytest.approx([best, best], rel=2e-3)
    # bounds: perfectly separated pairs stop at 0.25, pure noise at 20; one class present gives 1
    assert fit_temperature(np.r_[-5.0, -4, 4, 5], np.r_[0.0, 0, 1, 1]) == pytest.approx(0.25, rel=1e-6)
    assert fit_temperature(rng.normal(0, 50, 2000), (rng.random(2000) < 0.5).astype(float)) == pytest.approx(
        20, rel=1e-6
    )
    assert fit_temperature(z, np.ones_like(z)) == 1.0 and fit_temperature(z[:0], y[:0]) == 1.0


def test_softmax_temperature_minimises_the_nll_found_by_a_fine_grid():
    from scipy.special import log_softmax

    rng = np.random.default_rng(6)
    cls = rng.integers(0, 3, 1500)
    z = 4.0 * np.eye(3)[cls] + rng.normal(0, 2.5, (1500, 3))
    y = np.eye(3)[cls]
    grid = np.exp(np.linspace(np.log(0.25), np.log(20), 4001))
    best = grid[np.argmin([-np.mean(log_softmax(z / t, 1)[np.arange(1500), cls]) for t in grid])]
    assert fit_softmax_temperature(z, y) == pytest.approx(best, rel=2e-3)
    y_unknown = np.r_[y, np.full((20, 3), np.nan), np.zeros((20, 3))]  # unknown and empty rows: skipped
    z_more = np.r_[z, 30 * rng.normal(size=(40, 3))]
    assert fit_softmax_temperature(z_more, y_unknown) == pytest.approx(fit_softmax_temperature(z, y))
    assert fit_softmax_temperature(z, np.eye(3)[np.zeros(1500, int)]) == 1.0


def test_logits_to_probs_is_sigmoid_or_softmax_after_temperature():
    from scipy.special import expit, softmax

    z = np.array([[-800.0, -30.0, 0.0, 2.5], [40.0, 800.0, -1.0, 0.3]])
    t = np.array([1.0, 2.0, 0.5, 4.0])
    assert logits_to_probs(z, "multilabel") == pytest.approx(expit(z), rel=1e-12, abs=0)
    assert logits_to_probs(z, "multilabel", t) == pytest.approx(expit(z / t), rel=1e-12, abs=0)
    assert logits_to_probs(z, "multilabel")[0, 1] > 0  # exp(-30) stays positive: ranking kept
    assert logits_to_probs(z, "binary") == pytest.approx(softmax(z, axis=1), rel=1e-9, abs=1e-300)
    assert logits_to_probs(z, "multiclass", 2.0) == pytest.approx(
        softmax(z / 2.0, axis=1), rel=1e-9, abs=1e-300
    )


def test_probabilities_of_exactly_zero_and_one_are_valid_and_one_known_value_counts():
    y, p = np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.8])
    curve = reliability_curve(y, p)
    assert curve["count"].sum() == 3
    assert expected_calibration_error(np.array([1.0]), np.array([0.8])) == pytest.approx(0.2)
    assert np.isnan(expected_calibration_error(np.array([np.nan]), np.array([0.8])))


def test_softmax_temperature_for_two_classes_and_huge_logits():
    from scipy.special import log_softmax

    rng = np.random.default_rng(7)
    cls = rng.integers(0, 2, 1000)
    y = np.eye(2)[cls]
    for scale, hi in ((1.0, 20.0), (3000.0, 20000.0)):  # 3000: exp(z / T) overflows unless the max goes
        z = scale * (2.0 * np.eye(2)[cls] + rng.normal(0, 1.5, (1000, 2)))
        grid = np.exp(np.linspace(np.log(0.25), np.log(hi), 4001))
        best = grid[np.argmin([-np.mean(log_softmax(z / t, 1)[np.arange(1000), cls]) for t in grid])]
        got = fit_softmax_temperature(z, y, hi=hi)
        assert got == pytest.approx(best, rel=3e-3), scale


def test_softmax_temperature_on_separable_huge_logits_stops_at_the_lower_bound():
    """Every row right by a margin of 30: sharper is always better, so T ends at its floor. The losses
    there (exp(-120)) are far below 1e-16: log(1 + x) would round them to 0 and stop near T = 0.8."""
    cls = np.arange(200) % 3
    z = 30.0 * np.eye(3)[cls]
    assert fit_softmax_temperature(z, np.eye(3)[cls]) == pytest.approx(0.25, rel=1e-6)
    assert fit_softmax_temperature(z, np.eye(3)[cls], lo=0.05) == pytest.approx(0.05, rel=1e-6)
