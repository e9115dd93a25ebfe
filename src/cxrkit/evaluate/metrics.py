"""Classification metrics as pure functions: arrays in, numbers out; ``y_true`` explicit, NaN-aware.

Labels are (N, L) arrays with NaN for unknown; unknown entries are ignored per label. A label
with only one class present has no ROC-AUC: it gives NaN with a warning, never a crash, and
macro averages skip it.
"""

from __future__ import annotations

import warnings

import numpy as np


def _pairs(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values, score has {s.size}")
    keep = ~np.isnan(y) & ~np.isnan(s)
    return y[keep] > 0.5, s[keep]


def roc_auc(y_true: np.ndarray, score: np.ndarray, *, name: str = "label") -> float:
    """ROC-AUC of one label (Mann-Whitney U with average ranks for ties); NaN if one class only."""
    y, s = _pairs(y_true, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        warnings.warn(f"ROC-AUC of {name} is undefined: only one class present", RuntimeWarning, stacklevel=2)
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks of tied groups
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_label_auc(y_true: np.ndarray, scores: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
    """ROC-AUC of each column (L,), NaN where undefined."""
    y_true, scores = np.atleast_2d(y_true), np.atleast_2d(scores)
    names = labels or [str(j) for j in range(y_true.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.array([roc_auc(y_true[:, j], scores[:, j], name=names[j]) for j in range(y_true.shape[1])])
    undefined = [names[j] for j in np.flatnonzero(np.isnan(out))]
    if undefined:
        warnings.warn(
            f"ROC-AUC undefined (one class present) for: {', '.join(undefined)}", RuntimeWarning, stacklevel=2
        )
    return out


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC-AUC over labels where it is defined (NaN if none is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aucs = per_label_auc(y_true, scores)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def micro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of all (image, label) pairs pooled."""
    return roc_auc(y_true, scores, name="all labels (micro)")


def confusion_counts(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict:
    """Per-label TP, FP, TN, FN (arrays of shape (L,)) at a threshold or per-label thresholds."""
    y = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    known = ~np.isnan(y)
    pos = (y > 0.5) & known
    neg = (y <= 0.5) & known
    pred = s >= np.broadcast_to(np.asarray(threshold, dtype=np.float64), (s.shape[1],))[None, :]
    return {
        "tp": (pred & pos).sum(0),
        "fp": (pred & neg).sum(0),
        "tn": (~pred & neg).sum(0),
        "fn": (~pred & pos).sum(0),
    }


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1e-300), np.nan)


def threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5, beta: float = 1.0
) -> dict[str, np.ndarray]:
    """Per-label precision, recall (sensitivity), specificity, F-beta and accuracy at ``threshold``."""
    c = confusion_counts(y_true, scores, threshold)
    tp, fp, tn, fn = (c[k].astype(np.float64) for k in ("tp", "fp", "tn", "fn"))
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    b2 = beta * beta
    fbeta = _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)
    return {
        "precision": precision,
        "recall": recall,
        "specificity": _div(tn, tn + fp),
        "f1" if beta == 1.0 else f"f{beta:g}": fbeta,
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
        "support": tp + fn,
    }


def micro_threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5
) -> dict[str, float]:
    """Precision, recall and F1 over all (image, label) pairs pooled."""
    c = confusion_counts(y_true, scores, threshold)
    tp, fp, fn = (float(c[k].sum()) for k in ("tp", "fp", "fn"))
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": p, "recall": r, "f1": f1}


def nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaN; NaN when nothing is defined (no warning)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def summary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The headline numbers a training run tracks: AUCs, binary accuracy, macro/micro P/R/F1."""
    t = threshold_metrics(y_true, scores, threshold)
    micro = micro_threshold_metrics(y_true, scores, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"macro_auc": macro_auc(y_true, scores), "micro_auc": micro_auc(y_true, scores)}
    out.update(
        {
            "binary_accuracy": nanmean(t["accuracy"]),
            "macro_precision": nanmean(t["precision"]),
            "macro_recall": nanmean(t["recall"]),
            "macro_specificity": nanmean(t["specificity"]),
            "macro_f1": nanmean(t["f1"]),
            "micro_precision": micro["precision"],
            "micro_recall": micro["recall"],
            "micro_f1": micro["f1"],
        }
    )
    return out
