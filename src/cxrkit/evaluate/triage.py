"""Triage: which studies look abnormal and should be read first, and how many reads a threshold saves.

Abnormality score of a multi-label model (``method="auto"`` picks the first that applies):
- ``no_finding``: 1 - P(No Finding), when the model has a "No Finding" output. Preferred: that output
  is trained on exactly the normal/abnormal question, and on ChestX-ray14 abnormal studies include
  findings outside the 14 labels' strongest signals.
- ``noisy_or``: 1 - prod_k (1 - P(finding k)), the chance that at least one finding is present if
  findings were independent. Used when there is no "No Finding" output (e.g. one-label models, where
  it is simply P(finding)). It over-counts correlated findings, so its scale is not calibrated.
- ``max``: the largest finding probability (offered for comparison).
A binary (softmax) model with a "No Finding" class uses 1 - P(No Finding) too.

The operating point is the highest threshold whose *validation* sensitivity for "abnormal" is
still >= the target; it is then applied unchanged to test or to new images. Reads saved are the
true negatives: normal studies below the threshold that a radiologist could deprioritise; the
false negatives below it are the abnormal studies that would be missed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.config import SCORE_METHODS  # the one list, re-exported here
from cxrkit.evaluate.ood import OUT_OF_DISTRIBUTION
from cxrkit.evaluate.thresholds import ThresholdRule, choose_threshold
from cxrkit.labels import NO_FINDING


def resolve_score_method(labels: Sequence[str], method: str = "auto") -> str:
    """The score ``method`` stands for with these model outputs ("auto" resolved)."""
    if method not in SCORE_METHODS:
        raise ValueError(f"triage score {method!r}: expected one of {', '.join(SCORE_METHODS)}")
    if method == "auto":
        return "no_finding" if NO_FINDING in labels else "noisy_or"
    return method


def abnormality_score(
    probs: np.ndarray, labels: Sequence[str], method: str = "auto"
) -> tuple[np.ndarray, str]:
    """(N,) abnormality scores in [0, 1] and the method used (see the module docstring)."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    labels = list(labels)
    findings = [j for j, name in enumerate(labels) if name != NO_FINDING]
    method = resolve_score_method(labels, method)
    if method == "no_finding":
        if NO_FINDING not in labels:
            raise ValueError("triage score no_finding: the model has no 'No Finding' output; use noisy_or")
        return 1.0 - p[:, labels.index(NO_FINDING)], method
    if not findings:
        raise ValueError("triage: the model has no finding outputs")
    if method == "noisy_or":
        return 1.0 - np.prod(1.0 - p[:, findings], axis=1), method
    return p[:, findings].max(axis=1), method  # "max"


def abnormal_truth(targets: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(N,) 1 abnormal / 0 normal / NaN unknown: from "No Finding" if present, else any finding."""
    t = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    labels = list(labels)
    if NO_FINDING in labels:
        return 1.0 - t[:, labels.index(NO_FINDING)]
    any_pos = (t == 1).any(axis=1)
    all_known = ~np.isnan(t).any(axis=1)
    return np.where(any_pos, 1.0, np.where(all_known, 0.0, np.nan))


def operating_point(y_val: np.ndarray, score_val: np.ndarray, target_sensitivity: float = 0.95) -> float:
    """The highest threshold whose validation sensitivity for "abnormal" is >= the target."""
    return choose_threshold(y_val, score_val, ThresholdRule("sensitivity", target_sensitivity), "abnormal")


def is_flagged(score: np.ndarray, threshold: float) -> np.ndarray:
    """THE triage decision, for every path (predict, triage, evaluate, robustness, the service).

    (N,) True where a study's abnormality score is at or above the operating point's threshold; a
    NaN score is never flagged here, and ``flag_names`` calls it "not scored", never normal.
    """
    return np.asarray(score, dtype=np.float64) >= threshold


def flag_names(
    score: np.ndarray, threshold: float, out_of_distribution: np.ndarray | None = None
) -> np.ndarray:
    """(N,) "abnormal", "normal", "not scored" (a NaN score) or "out of distribution" (where
    ``out_of_distribution`` is True: read manually, never "normal"): what every table and answer shows."""
    s = np.asarray(score, dtype=np.float64)
    names = np.where(is_flagged(s, threshold), "abnormal", "normal").astype(object)
    if out_of_distribution is not None:
        names[np.asarray(out_of_distribution, dtype=bool)] = OUT_OF_DISTRIBUTION
    names[np.isnan(s)] = "not scored"
    return names


def triage_counts(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Flagged / reads saved (TN) / missed (FN) and rates at one threshold (flag: ``is_flagged``).

    A study without a finite score was not assessed: it is counted in ``not_scored`` and in none of
    the others (never as a read saved or a study missed).
    """
    y = np.asarray(y, dtype=np.float64)
    scores = np.asarray(score, dtype=np.float64)
    known, scored = ~np.isnan(y), ~np.isnan(scores)
    pos, s = y[known & scored] == 1, scores[known & scored]
    flag = is_flagged(s, threshold)
    tp, fp = int((flag & pos).sum()), int((flag & ~pos).sum())
    tn, fn = int((~flag & ~pos).sum()), int((~flag & pos).sum())
    n = tp + fp + tn + fn
    return {
        "threshold": float(threshold),
        "images": n,
        "abnormal": tp + fn,
        "flagged": tp + fp,
        "reads_saved": tn,
        "missed": fn,
        "sensitivity": _share(tp, tp + fn),
        "specificity": _share(tn, tn + fp),
        "reads_saved_share": _share(tn, n),
        "deferred_share": _share(tn + fn, n),
        "missed_share": _share(fn, tp + fn),
        "not_scored": int((known & ~scored).sum()),
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


def triage_sweep(
    y: np.ndarray, score: np.ndarray, chosen: float | None = None, steps: int = 20
) -> pd.DataFrame:
    """Threshold by threshold: reads saved against missed abnormal studies.

    Thresholds are the score quantiles that defer 0%, 5%, ..., 100% of studies, plus ``chosen``
    (marked in column ``chosen``); rows sorted by threshold.
    """
    s = np.asarray(score, dtype=np.float64)
    s = s[~np.isnan(np.asarray(y, dtype=np.float64))]
    grid = np.unique(np.quantile(s, np.linspace(0, 1, steps + 1))) if s.size else np.zeros(0)
    grid = np.r_[grid, np.nextafter(grid[-1], np.inf)] if grid.size else grid  # flag nothing
    rows = [triage_counts(y, score, t) | {"chosen": False} for t in grid]
    if chosen is not None:
        rows.append(triage_counts(y, score, chosen) | {"chosen": True})
    # pragma: no mutate (next line) -- only the keys of this empty count are used
    columns = [*triage_counts(np.zeros(0), np.zeros(0), 0.0), "chosen"]  # also when no truth is known
    return pd.DataFrame(rows, columns=columns).sort_values(["threshold", "chosen"]).reset_index(drop=True)


def top_findings(probs: np.ndarray, labels: Sequence[str], k: int = 3) -> list[str]:
    """Per image, the ``k`` most probable findings as "Effusion 0.81; Mass 0.42" ("No Finding" left out)."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    cols = [j for j, name in enumerate(labels) if name != NO_FINDING]
    out = []
    for row in p[:, cols]:
        best = np.argsort(-row, kind="stable")[:k]
        out.append("; ".join(f"{labels[cols[j]]} {row[j]:.2f}" for j in best))
    return out


def top_finding(probs: np.ndarray, labels: Sequence[str]) -> str:
    """The most probable finding of one image (not "No Finding", unless it is the only label)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    return next((labels[j] for j in order if labels[j] != NO_FINDING), labels[order[0]])


def build_worklist(
    meta: pd.DataFrame,
    probs: np.ndarray,
    labels: Sequence[str],
    score: np.ndarray,
    threshold: float,
    truth: np.ndarray | None = None,
    k: int = 3,
    out_of_distribution: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per image, most urgent first: rank, ids, abnormality score, flag, top findings (and truth).

    ``out_of_distribution`` (N,) bool: those studies are flagged "out of distribution", never normal."""
    flags = flag_names(score, threshold, out_of_distribution)  # never "normal" for NaN or OOD
    out = pd.DataFrame(
        {
            "image_id": meta["image_id"].astype(str).to_numpy(),
            "patient_id": meta["patient_id"].astype(str).to_numpy() if "patient_id" in meta else "",
            "score": np.round(np.asarray(score, dtype=np.float64), 6),
            "flag": flags,
            "top_findings": top_findings(probs, labels, k),
        }
    )
    if "path" in meta:
        out["path"] = meta["path"].astype(str).to_numpy()
    if truth is not None:
        t = np.asarray(truth, dtype=np.float64)
        out["truth"] = np.where(np.isnan(t), "", np.where(t == 1, "abnormal", "normal"))
    out = out.sort_values(
        ["score", "image_id"], ascending=[False, True], kind="stable", na_position="first"
    ).reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def add_unscored(worklist: pd.DataFrame, unscored: pd.DataFrame) -> pd.DataFrame:
    """The worklist with studies that were not scored on top, ranked first: they must be read manually.

    ``unscored``: one row per study with ``image_id``, ``patient_id``, ``path``, ``status``
    ("unreadable" / "not assessable") and ``note`` (what to tell the reader).
    """
    if unscored.empty:
        return worklist
    top = pd.DataFrame(
        {
            "image_id": unscored["image_id"].astype(str).to_numpy(),
            "patient_id": unscored["patient_id"].astype(str).to_numpy(),
            # a study out of distribution was scored: its score is shown, its flag says read manually
            "score": unscored["score"].to_numpy(np.float64) if "score" in unscored else np.nan,
            "flag": unscored["status"].astype(str).to_numpy(),
            "top_findings": unscored["note"].astype(str).to_numpy(),
        }
    )
    if "path" in worklist or "path" in unscored:
        top["path"] = unscored["path"].astype(str).to_numpy() if "path" in unscored else ""
    rest = worklist.drop(columns="rank")
    out = pd.concat([top, rest], ignore_index=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def threshold_interval(
    y_val: np.ndarray,
    score_val: np.ndarray,
    target_sensitivity: float,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """(low, high): the (1 - alpha) bootstrap interval of the operating-point threshold.

    The threshold is refitted on patient-resampled validation sets (images when ``groups`` is None);
    a score inside the interval is one the validation set cannot call either way: "borderline".
    """
    y = np.asarray(y_val, dtype=np.float64)
    s = np.asarray(score_val, dtype=np.float64)
    keep = ~np.isnan(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    g = np.arange(len(y)) if groups is None else np.asarray(groups).astype(str)[keep]
    names, codes = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(codes == k) for k in range(len(names))]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        rows = np.concatenate([members[k] for k in rng.integers(0, len(names), len(names))])
        if (y[rows] == 1).any():
            reps.append(operating_point(y[rows], s[rows], target_sensitivity))
    if not reps:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
