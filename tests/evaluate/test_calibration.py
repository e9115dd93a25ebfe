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
