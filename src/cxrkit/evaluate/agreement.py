"""Agreement between two raters' binary calls (the model and a reader): Cohen's kappa, its bootstrap
interval, and shares with Wilson intervals. Pure numpy: arrays in, numbers out.

Cohen's kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement and p_e the agreement two raters
with the same marginal rates would reach by chance. It is undefined (NaN) when p_e = 1: both raters
give one and the same class throughout. The interval resamples studies (``groups``: a reader's
several calls on one study move together), as ``evaluate.bootstrap`` resamples patients.
"""

from __future__ import annotations

import numpy as np

from cxrkit.evaluate.bootstrap import Interval, interval, patient_weights
from cxrkit.evaluate.sample_size import wilson_interval


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D 0/1 float arrays of one length, or a ValueError saying what is wrong."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"kappa needs two arrays of one length (got {x.size} and {y.size})")
    if not (np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all()):
        raise ValueError("kappa needs binary calls: 0 or 1, no NaN (leave unknown calls out first)")
    return x, y


def _weighted_kappa(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Kappa (B,) under each row of weights ``w`` (B, N) of the pairs ``a``, ``b`` (N,); NaN: undefined."""
    w = np.asarray(w, dtype=np.float64)  # the bootstrap's float32 weights would leave 1e-8 noise
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = (w * (a == b)).sum(1) / total
        p_a, p_b = (w * a).sum(1) / total, (w * b).sum(1) / total
        p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
        kappa = (p_o - p_e) / (1 - p_e)
    return np.where((total > 0) & (p_e < 1), kappa, np.nan)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary (0/1) arrays, one call per pair; NaN when undefined (no pairs, p_e = 1)."""
    x, y = _pair(a, b)
    return float(_weighted_kappa(x, y, np.ones((1, x.size)))[0])


def kappa_ci(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    alpha: float = 0.05,
) -> Interval:
    """Cohen's kappa with its (1 - alpha) percentile bootstrap interval, resampling ``groups`` (default:
    each pair on its own); NaN bounds when fewer than 10 replicates are defined."""
    x, y = _pair(a, b)
    if n_boot < 0:
        raise ValueError(f"n_boot {n_boot}: expected >= 0 bootstrap replicates")
    point = cohen_kappa(x, y)
    if n_boot == 0 or x.size == 0:
        return Interval(point, float("nan"), float("nan"), 0)
    units = np.arange(x.size) if groups is None else np.asarray(groups)
    if units.shape != x.shape:
        raise ValueError(f"groups: {units.size} entries for {x.size} pairs")
    reps = np.concatenate([_weighted_kappa(x, y, w) for w in patient_weights(units, n_boot, seed)])
    return interval(point, reps, alpha)


def share_ci(successes: int, n: int) -> dict[str, float]:
    """``successes`` of ``n`` as a share with its 95% Wilson interval (NaN for none): value, low, high, n."""
    low, high = wilson_interval(successes, n)
    return {"value": successes / n if n else float("nan"), "low": low, "high": high, "n": int(n)}


def binary_agreement(
    model: np.ndarray, reader: np.ndarray, n_boot: int = 1000, seed: int = 0, groups: np.ndarray | None = None
) -> dict[str, float]:
    """Model vs reader on one label: pairs, the 2x2 counts, agreement share and kappa with its interval."""
    x, y = _pair(model, reader)
    k = kappa_ci(x, y, n_boot, seed, groups)
    return {
        "n": int(x.size),
        "both_present": int(((x == 1) & (y == 1)).sum()),
        "model_only": int(((x == 1) & (y == 0)).sum()),
        "reader_only": int(((x == 0) & (y == 1)).sum()),
        "both_absent": int(((x == 0) & (y == 0)).sum()),
        "agreement": float((x == y).mean()) if x.size else float("nan"),
        "kappa": k.value,
        "kappa_low": k.low,
        "kappa_high": k.high,
    }
