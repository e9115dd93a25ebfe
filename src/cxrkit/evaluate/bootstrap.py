"""Bootstrap confidence intervals that resample *patients*, not images.

Images of one patient are correlated (follow-ups look alike), so resampling images understates the
uncertainty. Each replicate draws patients with replacement; an image's weight is the number of
times its patient was drawn, and the metrics are re-computed with those weights on arrays sorted
once (:class:`~cxrkit.evaluate.metrics.Ranked`). Intervals are percentile intervals over replicates
in which the metric is defined.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cxrkit.evaluate.metrics import Ranked, nanmean, rates_from_counts, weighted_auc_ap


@dataclass(frozen=True)
class Interval:
    """A point estimate with its (1 - alpha) percentile interval and the replicates it rests on."""

    value: float
    low: float
    high: float
    replicates: int

    def as_dict(self) -> dict[str, float]:
        """Plain numbers for JSON."""
        return {"value": self.value, "low": self.low, "high": self.high, "replicates": self.replicates}


def patient_weights(
    groups: np.ndarray,
    n_boot: int,
    seed: int = 0,
    chunk: int = 64,  # pragma: no mutate (chunk: memory only)
) -> Iterator[np.ndarray]:
    """Chunks of (B, N) image weights: each row draws the patients of ``groups`` with replacement."""
    codes, n_groups = _codes(groups)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        mult = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=b)
        yield mult.astype(np.float32)[:, codes]
        done += b


def _codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return codes.ravel(), len(names)


def interval(point: float, replicates: np.ndarray, alpha: float = 0.05) -> Interval:
    """Percentile interval of the finite replicates (NaN bounds when fewer than 10 are finite)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 10 or point != point:
        return Interval(float(point), float("nan"), float("nan"), int(r.size))
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return Interval(float(point), float(lo), float(hi), int(r.size))


@dataclass(frozen=True)
class RankingCIs:
    """Per-label and averaged ROC-AUC / average precision with patient-bootstrap intervals."""

    auc: list[Interval]
    ap: list[Interval]
    macro_auc: Interval
    macro_ap: Interval
    micro_auc: Interval
    micro_ap: Interval


def ranking_cis(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    average: Sequence[int] | None = None,
) -> RankingCIs:
    """ROC-AUC and AP per label, macro and micro, each with a patient-bootstrap (1 - alpha) interval.

    ``y_true``/``scores`` are (N, L), ``groups`` (N,) patient IDs. ``n_boot=0`` gives points only.
    ``average``: the columns macro and micro averages cover (default all; evaluation passes the
    findings, leaving "No Finding" out).
    """
    y = np.atleast_2d(np.asarray(y_true, dtype=np.float64))
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n_labels, n_rows = y.shape[1], y.shape[0]
    cols = list(range(n_labels)) if average is None else list(average)
    ranked = [Ranked.build(y[:, j], s[:, j]) for j in range(n_labels)]
    pooled = Ranked.build(y[:, cols].ravel(), s[:, cols].ravel())
    pooled = replace(pooled, rows=pooled.rows // len(cols))  # row-major: pooled entry r is image r // C

    def compute(w: np.ndarray | None) -> np.ndarray:
        """(B, 2L + 2): per-label AUC, per-label AP, micro AUC, micro AP."""
        if w is None:
            w = np.ones((1, n_rows), dtype=np.float32)
        per = [weighted_auc_ap(r, w) for r in ranked]
        return np.column_stack([c[0] for c in per] + [c[1] for c in per] + list(weighted_auc_ap(pooled, w)))

    point = compute(None)[0]
    reps = [compute(w) for w in patient_weights(groups, n_boot, seed)] if n_boot else []
    rep = np.vstack(reps) if reps else np.full((0, point.size), np.nan)  # pragma: no mutate (no rows)
    with np.errstate(invalid="ignore"):
        macro_rep_auc = _nanmean_rows(rep[:, cols])
        macro_rep_ap = _nanmean_rows(rep[:, [n_labels + j for j in cols]])
    return RankingCIs(
        auc=[interval(point[j], rep[:, j], alpha) for j in range(n_labels)],
        ap=[interval(point[n_labels + j], rep[:, n_labels + j], alpha) for j in range(n_labels)],
        macro_auc=interval(nanmean(point[cols]), macro_rep_auc, alpha),
        macro_ap=interval(nanmean(point[[n_labels + j for j in cols]]), macro_rep_ap, alpha),
        micro_auc=interval(point[-2], rep[:, -2], alpha),
        micro_ap=interval(point[-1], rep[:, -1], alpha),
    )


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    total = np.where(finite, a, 0.0).sum(1)
    count = finite.sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def rate_cis(
    y_true: np.ndarray,
    flagged: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Interval]:
    """Sensitivity, specificity, precision, F1 and accuracy of binary decisions, with patient-bootstrap CIs.

    ``y_true`` (N,) 0/1/NaN truth, ``flagged`` (N,) booleans (the model's decision).
    """
    y = np.asarray(y_true, dtype=np.float64)
    known = ~np.isnan(y)
    pos, pred = y == 1, np.asarray(flagged, bool)
    neg = ~pos & known
    cells = np.column_stack([pred & pos, pred & neg, ~pred & neg, ~pred & pos]).astype(np.float64)
    point = rates_from_counts(*cells.sum(0))
    reps: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for w in patient_weights(groups, n_boot, seed) if n_boot else []:
        counts = w @ cells  # (B, 4): weighted TP, FP, TN, FN
        for k, v in rates_from_counts(*counts.T).items():
            reps[k].append(v)
    out = {}
    for k, v in point.items():
        r = np.concatenate(reps[k]) if reps[k] else np.zeros(0)
        out["sensitivity" if k == "recall" else k] = interval(float(v), r, alpha)
    return out
