"""Calibration: does a predicted 0.3 mean "positive 30% of the time"? Reliability curve and ECE.

Bins are equal-width on [0, 1] and left-closed, the last one closed ([0.9, 1.0]), as in scikit-learn's
``calibration_curve``; empty bins are dropped. NaN labels are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

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
    y, p = y[keep] == 1, p[keep]
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


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T) against 0/1 ``y`` (numerically stable)."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _golden_log_min(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The T in [lo, hi] minimising a unimodal ``f(T)``: golden-section search on log T."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(np.exp(c)), f(np.exp(d))
    for _ in range(60):  # pragma: no mutate (shrinks by 0.618 per step: 60 steps reach ~1e-12 of log T)
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(np.exp(d))
    return float(np.exp((a + b) / 2.0))


T_BOUNDS = (0.25, 20.0)  # a label validation separates perfectly would otherwise be sharpened without end


def fit_temperature(
    logits: np.ndarray, y_true: np.ndarray, lo: float = T_BOUNDS[0], hi: float = T_BOUNDS[1]
) -> float:
    """Temperature T > 0 minimising the NLL of sigmoid(logit / T) on one label's validation pairs.

    Temperature scaling (Guo et al. 2017) rescales confidence without changing the ranking, so
    ROC-AUC is unchanged. Golden-section search on log T in [lo, hi] (on perfectly separated
    validation pairs the NLL falls as T -> 0, so T stops at ``lo`` rather than turning every
    output into 0 or 1); NaN labels are ignored; a label without both classes gets T = 1.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel()
    keep = ~np.isnan(y) & np.isfinite(z)
    y, z = (y[keep] == 1).astype(np.float64), z[keep]
    if y.size == 0 or y.min() == y.max():
        return 1.0
    return _golden_log_min(lambda t: _nll(z, y, t), lo, hi)


def fit_temperatures(logits: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Per-label temperatures (L,) for (N, L) validation logits and 0/1/NaN targets."""
    z, y = np.atleast_2d(logits), np.atleast_2d(y_true)
    return np.array([fit_temperature(z[:, j], y[:, j]) for j in range(z.shape[1])])


def fit_softmax_temperature(
    logits: np.ndarray, y_true: np.ndarray, lo: float = T_BOUNDS[0], hi: float = T_BOUNDS[1]
) -> float:
    """One temperature for a softmax (single-label) model: minimises the NLL of softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    known = ~np.isnan(y).any(1) & (np.nansum(y, 1) > 0)
    z, cls = z[known], np.argmax(y[known], 1)
    if len(np.unique(cls)) < 2:
        return 1.0

    rows = np.arange(len(z))
    gap = z - z[rows, cls][:, None]  # each class's logit minus the true class's (0 for the true one)
    others = np.ones(gap.shape, dtype=bool)
    others[rows, cls] = False

    def nll(t: float) -> float:  # -log softmax(z / T)[true]: convex in 1/T, so unimodal in log T
        d = gap / t
        m = np.maximum(d.max(1), 0.0)  # exp(d - m) cannot overflow
        rest = (np.exp(d - m[:, None]) * others).sum(1)
        # m + log(exp(-m) + rest); where the true class leads (m = 0), log1p keeps the tiny losses of
        # rows that are right by a wide margin instead of rounding log(1 + 1e-20) to 0
        return float(np.mean(np.where(m > 0, m + np.log(np.exp(-m) + rest), np.log1p(rest))))

    return _golden_log_min(nll, lo, hi)


def reliability_table(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """The reliability curve as a reader's table: "scored 0.6-0.7 -> positive X% of the time (n)"."""
    c = reliability_curve(y_true, prob, n_bins)
    return pd.DataFrame(
        {
            # pragma: no mutate (next line) -- strict: both columns come from one table
            "predicted": [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(c["bin_low"], c["bin_high"], strict=True)],
            "mean_predicted": c["mean_predicted"],
            "observed_positive_rate": c["observed"],
            "pairs": c["count"],
        }
    )


def logits_to_probs(
    logits: np.ndarray, task: str, temperatures: np.ndarray | float | None = None
) -> np.ndarray:
    """Probabilities from logits (N, L): sigmoid per label (multi-label) or softmax (single-label tasks).

    ``temperatures`` divides the logits first (per label, or one value for softmax): the
    calibration stored with a run. This is the one place outputs become probabilities; float64, so
    scores near 0 or 1 keep their order (float32 rounds 1 - 1e-8 to 1).
    """
    z = np.asarray(logits, dtype=np.float64)
    if temperatures is not None:
        z = z / np.asarray(temperatures, dtype=np.float64)
    if task in ("binary", "multiclass"):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    e = np.exp(-np.abs(z))  # sigmoid without overflow, and without rounding small values to 0
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # pragma: no mutate (z = 0: both are 1/2)


def reliability_bins(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> list[list[list[float]]]:
    """Per label column: ``[[low, high, images, positives], ...]`` for every bin, empty ones included,
    so that a viewer can say what a probability has meant ("of studies scored 0.5-0.6, 46% had the
    finding") or that it has no track record. Bins as ``reliability_curve``: a value on an edge belongs
    to the bin above it, 1.0 to the last; the edges are ``linspace(0, 1, n_bins + 1)``, unrounded, so
    a reader of these bins places a value where this function did."""
    y, p = np.atleast_2d(y_true), np.atleast_2d(prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = []
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j]) & ~np.isnan(p[:, j])
        ids = np.searchsorted(edges[1:-1], p[keep, j], side="right")
        count = np.bincount(ids, minlength=n_bins)
        pos = np.bincount(ids, (y[keep, j] == 1).astype(np.float64), minlength=n_bins)
        out.append(
            [[float(edges[k]), float(edges[k + 1]), int(count[k]), int(pos[k])] for k in range(len(count))]
        )
    return out
