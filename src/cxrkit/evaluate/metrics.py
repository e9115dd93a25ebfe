"""Classification metrics as pure functions: arrays in, numbers out; ``y_true`` explicit, NaN-aware.

Labels are (N, L) arrays with NaN for unknown; unknown entries are ignored per label. A label
with only one class present has no ROC-AUC or average precision: it gives NaN with a warning,
never a crash, and macro averages skip it. Ranking metrics are computed from per-score-group
counts (:class:`Ranked`), so the bootstrap re-weights the same sorted arrays instead of re-sorting.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrkit.labels import NO_FINDING, finding_columns


def _pairs(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values, score has {s.size}")
    keep = ~np.isnan(y) & ~np.isnan(s)
    return y[keep] == 1, s[keep], np.flatnonzero(keep)


@dataclass(frozen=True)
class Ranked:
    """One label's known entries sorted by score (descending) and cut into groups of tied scores.

    ``rows`` are the entries' positions in the input (for weights); ``group`` maps each sorted
    entry to its tie group; ``scores`` holds each group's score.
    """

    rows: np.ndarray
    positive: np.ndarray
    group: np.ndarray
    scores: np.ndarray

    @staticmethod
    def build(y_true: np.ndarray, score: np.ndarray) -> Ranked:
        """Sort the known (y, score) pairs of one label."""
        y, s, rows = _pairs(y_true, score)
        order = np.argsort(-s, kind="mergesort")
        s_sorted = s[order]
        new = np.r_[True, s_sorted[1:] != s_sorted[:-1]] if s.size else np.zeros(0, bool)
        return Ranked(rows[order], y[order], np.cumsum(new) - 1, s_sorted[new])

    def counts(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Weighted positives and negatives per tie group: two (B, G) arrays (B=1 without weights).

        ``weights`` is (B, N) over the input rows (bootstrap multiplicities) or None for all ones.
        """
        g = self.scores.size
        if weights is None:
            pos = np.bincount(self.group, self.positive.astype(np.float64), minlength=g)[None]
            tot = np.bincount(self.group, minlength=g).astype(np.float64)[None]
            return pos, tot - pos
        w = np.asarray(weights)[:, self.rows]
        pos_w = np.where(self.positive[None], w, 0)
        if g == self.rows.size:  # no ties (or nothing known): each entry is its own group
            return pos_w.astype(np.float64), (w - pos_w).astype(np.float64)
        starts = np.flatnonzero(np.r_[True, self.group[1:] != self.group[:-1]])
        tot = np.add.reduceat(w, starts, axis=1, dtype=np.float64)
        pos = np.add.reduceat(pos_w, starts, axis=1, dtype=np.float64)
        return pos, tot - pos


def auc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC-AUC (B,) from per-group counts sorted by descending score; ties count one half."""
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    neg_below = n_neg[:, None] - np.cumsum(neg, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(1) / (n_pos * n_neg)  # 0 / 0 = NaN for one class


def ap_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision (B,) as scikit-learn defines it: sum over thresholds of recall step x precision."""
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    tp, fp = np.cumsum(pos, 1), np.cumsum(neg, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # pragma: no mutate (next line) -- tp + fp is 0 only above the first weighted entry, where pos is 0
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos * precision).sum(1) / n_pos
    return np.where(n_neg > 0, ap, np.nan)  # no positives: 0 / 0 is NaN already


def weighted_auc_ap(r: Ranked, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ROC-AUC (B,), AP (B,)) of one label under (B, N) weights: the numbers ``auc_from_counts`` and
    ``ap_from_counts`` give for ``r.counts(weights)``, for the bootstrap's many replicates.

    Both sums run over tie groups that hold a positive only; everything between those groups enters
    through prefix sums at their edges (one ``reduceat`` over the gathered weights), so the work per
    replicate is one pass over the label's entries plus a little per positive, not a dozen full passes.
    """
    w = np.asarray(weights)[:, r.rows]
    b, m = w.shape[0], r.rows.size
    if m == 0:
        return np.full(b, np.nan), np.full(b, np.nan)
    starts = np.flatnonzero(np.r_[True, r.group[1:] != r.group[:-1]])
    ends = np.r_[starts[1:], m]
    held = np.unique(r.group[r.positive])  # the tie groups that hold a positive
    first, last = starts[held], ends[held]
    edges = np.unique(np.r_[0, first, last[last < m]])
    parts = np.add.reduceat(w, edges, axis=1, dtype=np.float64)
    prefix = np.concatenate([np.zeros((b, 1)), np.cumsum(parts, 1)], 1)  # weight before each edge, then all
    pos_at = np.flatnonzero(r.positive)
    pos_prefix = np.concatenate([np.zeros((b, 1)), np.cumsum(w[:, pos_at], 1, dtype=np.float64)], 1)

    def before(x: np.ndarray, table: np.ndarray, where: np.ndarray) -> np.ndarray:
        return table[:, np.searchsorted(where, x)]

    tot_before, pos_before = before(first, prefix, edges), before(first, pos_prefix, pos_at)
    tot_in = before(last, prefix, edges) - tot_before
    pos_in = before(last, pos_prefix, pos_at) - pos_before
    neg_before, neg_in = tot_before - pos_before, tot_in - pos_in
    n_pos = pos_prefix[:, -1]
    n_neg = prefix[:, -1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_in * (n_neg[:, None] - neg_before - 0.5 * neg_in)).sum(1) / (n_pos * n_neg)
        tp, fp = pos_before + pos_in, neg_before + neg_in
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos_in * precision).sum(1) / n_pos
    return auc, np.where(n_neg > 0, ap, np.nan)


def _single_class_warning(metric: str, name: str) -> None:
    warnings.warn(f"{metric} of {name} is undefined: only one class present", RuntimeWarning, stacklevel=3)


def roc_auc(y_true: np.ndarray, score: np.ndarray, *, name: str = "label") -> float:
    """ROC-AUC of one label (Mann-Whitney U, ties count one half); NaN with a warning if one class only."""
    value = float(auc_from_counts(*Ranked.build(y_true, score).counts())[0])
    if value != value:
        _single_class_warning("ROC-AUC", name)
    return value


def average_precision(y_true: np.ndarray, score: np.ndarray, *, name: str = "label") -> float:
    """PR-AUC as average precision (scikit-learn's definition); NaN with a warning if one class only."""
    value = float(ap_from_counts(*Ranked.build(y_true, score).counts())[0])
    if value != value:
        _single_class_warning("Average precision", name)
    return value


def _per_label(fn, metric: str, y_true: np.ndarray, scores: np.ndarray, labels) -> np.ndarray:
    y_true, scores = np.atleast_2d(y_true), np.atleast_2d(scores)
    names = list(labels) if labels else [str(j) for j in range(y_true.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.array([fn(y_true[:, j], scores[:, j], name=names[j]) for j in range(y_true.shape[1])])
    undefined = [names[j] for j in np.flatnonzero(np.isnan(out))]
    if undefined:
        warnings.warn(
            f"{metric} undefined (one class present) for: {', '.join(undefined)}",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


def per_label_auc(y_true: np.ndarray, scores: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
    """ROC-AUC of each column (L,), NaN where undefined."""
    return _per_label(roc_auc, "ROC-AUC", y_true, scores, labels)


def per_label_ap(y_true: np.ndarray, scores: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
    """Average precision of each column (L,), NaN where undefined."""
    return _per_label(average_precision, "Average precision", y_true, scores, labels)


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC-AUC over labels where it is defined (NaN if none is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return nanmean(per_label_auc(y_true, scores))


def macro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean average precision over labels where it is defined (NaN if none is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return nanmean(per_label_ap(y_true, scores))


def micro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of all (image, label) pairs pooled."""
    return roc_auc(y_true, scores, name="all labels (micro)")


def micro_ap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of all (image, label) pairs pooled."""
    return average_precision(y_true, scores, name="all labels (micro)")


def confusion_counts(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict:
    """Per-label TP, FP, TN, FN (arrays of shape (L,)) at a threshold or per-label thresholds."""
    y = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = y == 1, y == 0  # labels are 0/1; NaN (unknown) is neither
    pred = s >= np.broadcast_to(np.asarray(threshold, dtype=np.float64), (s.shape[1],))[None, :]
    return {
        "tp": (pred & pos).sum(0),
        "fp": (pred & neg).sum(0),
        "tn": (~pred & neg).sum(0),
        "fn": (~pred & pos).sum(0),
    }


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b  # every ratio here has a = 0 where b = 0: 0 / 0 is NaN, undefined


def rates_from_counts(tp, fp, tn, fn, beta: float = 1.0) -> dict[str, np.ndarray]:
    """Precision, recall (sensitivity), specificity, F1, F-beta and accuracy from confusion counts.

    Works element-wise on arrays (per label, or (B, L) bootstrap counts); undefined ratios are NaN.
    """
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    b2 = beta * beta
    return {
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "f1": _div(2 * tp, 2 * tp + fn + fp),
        "fbeta": _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp),
        "accuracy": _div(tp + tn, tp + tn + fp + fn),
    }


def threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5, beta: float = 1.0
) -> dict[str, np.ndarray]:
    """Per-label precision, recall, specificity, F1, F-beta (``beta``), accuracy and support.

    ``threshold`` is one number or a per-label vector; an image is positive when score >= threshold.
    """
    c = confusion_counts(y_true, scores, threshold)
    out = rates_from_counts(c["tp"], c["fp"], c["tn"], c["fn"], beta)
    out["support"] = (c["tp"] + c["fn"]).astype(np.float64)
    return out


def micro_threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5, beta: float = 1.0
) -> dict[str, float]:
    """Precision, recall, specificity, F1 and F-beta over all (image, label) pairs pooled."""
    c = confusion_counts(y_true, scores, threshold)
    out = rates_from_counts(*(c[k].sum() for k in ("tp", "fp", "tn", "fn")), beta)
    return {k: float(v) for k, v in out.items() if k != "accuracy"}


def multilabel_accuracy(y_true: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict:
    """Binary (label-wise) accuracy, Hamming loss and subset accuracy over known entries.

    Binary accuracy = 1 - Hamming loss = share of known (image, label) pairs right; subset accuracy =
    share of images whose every known label is right (scikit-learn's multi-label ``accuracy_score``).
    """
    y = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    known = ~np.isnan(y)
    pred = s >= np.broadcast_to(np.asarray(threshold, dtype=np.float64), (s.shape[1],))[None, :]
    wrong = (pred != (y == 1)) & known
    n_known = known.sum()
    hamming = float(wrong.sum() / n_known) if n_known else float("nan")
    rows = known.any(1)
    subset = float((~wrong.any(1))[rows].mean()) if rows.any() else float("nan")
    return {"binary_accuracy": 1.0 - hamming, "hamming_loss": hamming, "subset_accuracy": subset}


def nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaN; NaN when nothing is defined (no warning)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


# the summary figures at thresholds, in the order tables show them (a subset of summary_metrics' keys)
THRESHOLD_METRICS = (
    "macro_precision",
    "macro_recall",
    "macro_specificity",
    "macro_f1",
    "macro_fbeta",
    "micro_f1",
)
RANKING_METRICS = ("macro_auc", "micro_auc", "macro_ap", "micro_ap")


def summary_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float | np.ndarray = 0.5,
    beta: float = 1.0,
    labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """The headline numbers of a model on one split: AUCs, APs, accuracies, macro/micro P/R/F1.

    With ``labels``, macro and micro averages cover the findings only ("No Finding" excluded, as in
    the ChestX-ray14 literature) and "No Finding" gets its own ``no_finding_auc``/``no_finding_ap``;
    ``macro_labels`` counts the labels averaged.
    """
    y, p = np.atleast_2d(y_true), np.atleast_2d(scores)
    th = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (y.shape[1],))
    cols = finding_columns(labels) if labels is not None else list(range(y.shape[1]))
    yc, pc, tc = y[:, cols], p[:, cols], th[cols]
    t = threshold_metrics(yc, pc, tc, beta)
    micro = micro_threshold_metrics(yc, pc, tc, beta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {
            "macro_auc": macro_auc(yc, pc),
            "micro_auc": micro_auc(yc, pc),
            "macro_ap": macro_ap(yc, pc),
            "micro_ap": micro_ap(yc, pc),
        }
        if labels is not None and NO_FINDING in labels:
            j = list(labels).index(NO_FINDING)
            out["no_finding_auc"] = roc_auc(y[:, j], p[:, j], name=NO_FINDING)
            out["no_finding_ap"] = average_precision(y[:, j], p[:, j], name=NO_FINDING)
    out["macro_labels"] = len(cols)
    out.update(multilabel_accuracy(yc, pc, tc))
    for k in ("precision", "recall", "specificity", "f1", "fbeta"):
        out[f"macro_{k}"] = nanmean(t[k])
    for k in ("precision", "recall", "specificity", "f1", "fbeta"):
        out[f"micro_{k}"] = micro[k]
    return out


def roc_curve_points(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct threshold, from (0, 0) to (1, 1); empty arrays if undefined."""
    pos, neg = (c[0] for c in Ranked.build(y_true, score).counts())
    if pos.sum() == 0 or neg.sum() == 0:
        return np.zeros(0), np.zeros(0)
    return np.r_[0.0, np.cumsum(neg) / neg.sum()], np.r_[0.0, np.cumsum(pos) / pos.sum()]


def pr_curve_points(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold (highest first); empty if there are no positives."""
    pos, neg = (c[0] for c in Ranked.build(y_true, score).counts())
    if pos.sum() == 0:
        return np.zeros(0), np.zeros(0)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    return tp / pos.sum(), tp / (tp + fp)
