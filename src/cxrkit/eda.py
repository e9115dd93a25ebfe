"""Exploratory statistics of a dataset's metadata: pure functions, tables in, tables out.

Counts treat a label as positive when its value is > 0.5; shares are over images whose label
is known (not NaN), so sources that annotate only some labels are not under-counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.labels import NO_FINDING

AGE_BANDS = (0, 20, 40, 60, 80, 121)


def _positives(meta: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    return (meta[list(labels)].to_numpy(dtype=np.float32) > 0.5).astype(np.int64)


def findings_of(labels: Sequence[str]) -> list[str]:
    """The labels that are findings (everything except "No Finding")."""
    return [lab for lab in labels if lab != NO_FINDING]


def label_counts(meta: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per label: positives, images with the label known, and share of known images (sorted)."""
    vals = meta[list(labels)].to_numpy(dtype=np.float32)
    known = (~np.isnan(vals)).sum(0)
    pos = (vals > 0.5).sum(0)
    out = pd.DataFrame(
        {
            "label": list(labels),
            "count": pos,
            "known": known,
            "share": np.where(known > 0, pos / np.maximum(known, 1), np.nan),
        }
    )
    return out.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def findings_per_image(meta: pd.DataFrame, labels: Sequence[str]) -> pd.Series:
    """Distribution of the number of findings per image (index: 0, 1, 2, ...)."""
    k = _positives(meta, findings_of(labels)).sum(1)
    return pd.Series(k).value_counts().sort_index().rename("images")


def multilabel_share(meta: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """Share of all images, and of abnormal ones, that carry two or more findings."""
    k = _positives(meta, findings_of(labels)).sum(1)
    abnormal = int((k > 0).sum())
    return {
        "images": len(k),
        "abnormal": abnormal,
        "multi_label": int((k > 1).sum()),
        "multi_label_share_of_all": float((k > 1).mean()) if len(k) else float("nan"),
        "multi_label_share_of_abnormal": float((k > 1).sum() / abnormal) if abnormal else float("nan"),
    }


def cooccurrence(meta: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Counts of images with both labels (diagonal: the label's count)."""
    y = _positives(meta, labels)
    return pd.DataFrame(y.T @ y, index=list(labels), columns=list(labels))


def label_correlation(meta: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Pearson (phi) correlation between binary labels; NaN where a label is constant."""
    y = _positives(meta, labels).astype(np.float64)
    sd = y.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.cov(y, rowvar=False, bias=True) / np.outer(sd, sd)
    c[np.outer(sd == 0, sd == 0) | (sd == 0)[:, None] | (sd == 0)[None, :]] = np.nan
    return pd.DataFrame(c, index=list(labels), columns=list(labels))


def by_label(meta: pd.DataFrame, labels: Sequence[str], column: str) -> pd.DataFrame:
    """Counts of each value of ``column`` (sex, view...) among each label's positives; plus 'All'."""
    values = meta[column].astype(object).where(meta[column].notna(), "unknown").astype(str)
    rows = {"All": values.value_counts()}
    y = _positives(meta, labels)
    for j, lab in enumerate(labels):
        rows[lab] = values[y[:, j] == 1].value_counts()
    return pd.DataFrame(rows).T.fillna(0).astype(int)


def age_by_label(meta: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Age summary (n, mean, median, quartiles) overall and for each label's positives."""
    age = meta["age"].astype(float)
    y = _positives(meta, labels)
    parts = {"All": age}
    parts.update({lab: age[y[:, j] == 1] for j, lab in enumerate(labels)})
    out = {}
    for name, a in parts.items():
        a = a.dropna()
        out[name] = (
            {
                "n": len(a),
                "mean": a.mean(),
                "q25": a.quantile(0.25),
                "median": a.median(),
                "q75": a.quantile(0.75),
            }
            if len(a)
            else {"n": 0}
        )
    return pd.DataFrame(out).T


def has_column(meta: pd.DataFrame, column: str) -> bool:
    """True when ``column`` exists and holds at least one known value."""
    return column in meta.columns and bool(meta[column].notna().any())


def summarize(meta: pd.DataFrame, labels: Sequence[str]) -> dict:
    """Headline numbers: images, patients, per-label counts."""
    counts = label_counts(meta, labels)
    return {
        "images": len(meta),
        "patients": int(meta["patient_id"].nunique()),
        "label_counts": dict(zip(counts["label"], counts["count"].astype(int), strict=False)),
        **multilabel_share(meta, labels),
    }


def size_table(sizes: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """Images per (width, height), most common first: whether a folder mixes resolutions."""
    frame = pd.DataFrame(list(sizes), columns=["width", "height"])
    counts = frame.value_counts(["width", "height"], sort=False).rename("images").reset_index()
    return counts.sort_values(["images", "width", "height"], ascending=[False, True, True], ignore_index=True)
