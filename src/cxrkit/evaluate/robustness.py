"""Robustness to acquisition shift as pure table maths: the mean corruption AUC and the relative drop.

The input is the robustness table (one row per shift and severity, the clean row at severity 0 with
shift ``clean``), as ``cxr robustness`` writes it. mCA (mean corruption AUC) is the mean macro ROC-AUC
over every shift and severity 1..5 in the table; the relative drop is ``(clean - mCA) / clean``.
NaN entries (a metric undefined on the images) are skipped; nothing defined gives NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrkit.evaluate.metrics import nanmean

CLEAN = "clean"  # the shift name of the untouched images' row (severity 0)


def corrupted_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of shifted images (severity >= 1), in table order."""
    return table[(table["severity"] >= 1) & (table["shift"] != CLEAN)]


def clean_value(table: pd.DataFrame, column: str = "macro_auc") -> float:
    """``column`` on the untouched images (the single severity-0 row); ValueError if there is none."""
    clean = table[table["severity"] == 0]
    if len(clean) != 1:
        raise ValueError(f"robustness table: expected one clean (severity 0) row, found {len(clean)}")
    return float(clean[column].iloc[0])


def mean_corruption(table: pd.DataFrame, column: str = "macro_auc") -> float:
    """Mean of ``column`` over every shift and severity >= 1 (mCA for ``macro_auc``); NaN skipped."""
    return nanmean(corrupted_rows(table)[column].to_numpy(np.float64))


def relative_drop(clean: float, corrupted: float) -> float:
    """``(clean - corrupted) / clean``: the share of the clean score lost; NaN if clean is 0 or undefined."""
    if not np.isfinite(clean) or not np.isfinite(corrupted) or clean == 0:
        return float("nan")
    return float((clean - corrupted) / clean)


def per_shift_mean(table: pd.DataFrame, column: str = "macro_auc") -> dict[str, float]:
    """Each shift's mean ``column`` over its severities >= 1, shifts in table order."""
    rows = corrupted_rows(table)
    return {
        str(name): nanmean(rows.loc[rows["shift"] == name, column].to_numpy(np.float64))
        for name in dict.fromkeys(rows["shift"])
    }


def severity_grid(table: pd.DataFrame, column: str = "macro_auc") -> pd.DataFrame:
    """Shift x severity grid of ``column``: shifts in table order, severities ascending, no clean row."""
    rows = corrupted_rows(table)
    grid = rows.pivot(index="shift", columns="severity", values=column)
    return grid.reindex(list(dict.fromkeys(rows["shift"])))


def robustness_summary(table: pd.DataFrame) -> dict[str, object]:
    """Headline numbers of a robustness table: clean AUC, mCA, relative drop, per-shift means, triage."""
    clean, mca = clean_value(table), mean_corruption(table)
    out: dict[str, object] = {
        "clean_auc": clean,
        "mca": mca,
        "relative_drop": relative_drop(clean, mca),
        "per_shift_auc": per_shift_mean(table),
    }
    for k in ("triage_sensitivity", "triage_specificity"):
        if k in table:
            out[k] = {"clean": clean_value(table, k), "mean_corrupted": mean_corruption(table, k)}
    return out
