"""Reliability curve agrees with scikit-learn; ECE is zero for a calibrated predictor and large otherwise."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from cxrkit.evaluate.calibration import expected_calibration_error, per_label_ece, reliability_curve


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
