"""Calibration: does a predicted 0.3 mean "positive 30% of the time"? Reliability curve and ECE.

Bins are equal-width on [0, 1] and left-closed, the last one closed ([0.9, 1.0]), as in scikit-learn's
``calibration_curve``; empty bins are dropped. NaN labels are ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """One row per non-empty bin: bin edges, mean predicted probability, observed positive rate, count.

    Multi-column inputs are pooled (every known image-label pair is one prediction).
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values, prob has {p.size}")
    keep = ~np.isnan(y) & ~np.isnan(p)
    y, p = y[keep] > 0.5, p[keep]
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("reliability_curve needs probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, p, minlength=n_bins)
    sum_y = np.bincount(ids, y.astype(np.float64), minlength=n_bins)
    nz = count > 0
    return pd.DataFrame(
        {
            "bin_low": edges[:-1][nz],
            "bin_high": edges[1:][nz],
            "mean_predicted": sum_p[nz] / count[nz],
            "observed": sum_y[nz] / count[nz],
            "count": count[nz],
        }
    )


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE: count-weighted mean |observed - mean predicted| over bins; NaN when nothing is known."""
    curve = reliability_curve(y_true, prob, n_bins)
    n = curve["count"].sum()
    if n == 0:
        return float("nan")
    gap = (curve["observed"] - curve["mean_predicted"]).abs()
    return float((gap * curve["count"]).sum() / n)


def per_label_ece(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """ECE of each column (L,)."""
    y, p = np.atleast_2d(y_true), np.atleast_2d(prob)
    return np.array([expected_calibration_error(y[:, j], p[:, j], n_bins) for j in range(y.shape[1])])
