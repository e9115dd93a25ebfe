"""Subgroup (fairness) slices: the same metrics by sex, age band and view position, with counts.

A metric over a small slice is noisy: the table carries images and patients per slice so a reader
can judge, and slices below ``min_images`` are listed with counts only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.evaluate.metrics import macro_ap, macro_auc, micro_auc, nanmean, per_label_auc, threshold_metrics
from cxrkit.evaluate.triage import triage_counts

AGE_BANDS = (0, 18, 40, 60, 80, np.inf)
AGE_NAMES = ("0-17", "18-39", "40-59", "60-79", "80+")


def subgroup_columns(meta: pd.DataFrame) -> dict[str, pd.Series]:
    """Slice attributes the metadata has: sex, age band, view (missing or all-NaN columns are skipped)."""
    out: dict[str, pd.Series] = {}
    if "sex" in meta and meta["sex"].notna().any():
        out["sex"] = meta["sex"].astype("string")
    if "age" in meta and pd.to_numeric(meta["age"], errors="coerce").notna().any():
        age = pd.to_numeric(meta["age"], errors="coerce")
        out["age band"] = pd.cut(age, AGE_BANDS, right=False, labels=AGE_NAMES).astype("string")
    if "view" in meta and meta["view"].notna().any():
        out["view"] = meta["view"].astype("string")
    return out


def subgroup_table(
    meta: pd.DataFrame,
    y_true: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray,
    abnormal: np.ndarray | None = None,
    abnormal_score: np.ndarray | None = None,
    triage_threshold: float | None = None,
    min_images: int = 10,
) -> pd.DataFrame:
    """One row per (attribute, group): images, patients, macro/micro AUC, macro AP, macro F1, triage rates."""
    rows = []
    for attr, values in subgroup_columns(meta).items():
        for group in sorted(values.dropna().unique()):
            m = (values == group).fillna(False).to_numpy()
            row = {
                "attribute": attr,
                "group": str(group),
                "images": int(m.sum()),
                "patients": int(meta.loc[m, "patient_id"].nunique())
                if "patient_id" in meta
                else int(m.sum()),
            }
            if m.sum() >= min_images:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    row["macro_auc"] = macro_auc(y_true[m], probs[m])
                    row["micro_auc"] = micro_auc(y_true[m], probs[m])
                    row["macro_ap"] = macro_ap(y_true[m], probs[m])
                    row["macro_f1"] = nanmean(threshold_metrics(y_true[m], probs[m], thresholds)["f1"])
                if abnormal is not None and abnormal_score is not None and triage_threshold is not None:
                    t = triage_counts(abnormal[m], abnormal_score[m], triage_threshold)
                    row["abnormal_share"] = (
                        float(np.nanmean(abnormal[m])) if np.isfinite(abnormal[m]).any() else np.nan
                    )
                    row["triage_sensitivity"] = t["sensitivity"]
                    row["triage_specificity"] = t["specificity"]
            rows.append(row)
    return pd.DataFrame(rows)


def subgroup_label_auc(
    meta: pd.DataFrame, y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], min_images: int = 10
) -> pd.DataFrame:
    """Per-label ROC-AUC in each slice (rows: attribute, group; columns: labels)."""
    rows = []
    for attr, values in subgroup_columns(meta).items():
        for group in sorted(values.dropna().unique()):
            m = (values == group).fillna(False).to_numpy()
            if m.sum() < min_images:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                aucs = per_label_auc(y_true[m], probs[m], list(labels))
            rows.append({"attribute": attr, "group": str(group), **dict(zip(labels, aucs, strict=True))})
    return pd.DataFrame(rows)
