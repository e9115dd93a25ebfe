"""mCA, relative drop and per-shift means of a robustness table, against hand computation."""

import math

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluate.robustness import (
    clean_value,
    mean_corruption,
    per_shift_mean,
    relative_drop,
    robustness_summary,
    severity_grid,
)


def table() -> pd.DataFrame:
    rows = [("clean", 0, 0.90, 0.96, 0.40)]
    rows += [
        ("gamma", s, a, 0.95, 0.40) for s, a in zip(range(1, 6), (0.89, 0.88, 0.86, 0.85, 0.82), strict=True)
    ]
    rows += [
        ("blur", s, a, 0.97, 0.20) for s, a in zip(range(1, 6), (0.90, 0.80, 0.70, 0.60, 0.50), strict=True)
    ]
    return pd.DataFrame(
        rows, columns=["shift", "severity", "macro_auc", "triage_sensitivity", "triage_specificity"]
    )


def test_mca_and_drop_by_hand():
    t = table()
    assert clean_value(t) == 0.90
    mca = (0.89 + 0.88 + 0.86 + 0.85 + 0.82 + 0.90 + 0.80 + 0.70 + 0.60 + 0.50) / 10
    assert mean_corruption(t) == pytest.approx(mca)  # the clean row is not a corruption
    assert relative_drop(0.90, mca) == pytest.approx((0.90 - 0.78) / 0.90)
    assert per_shift_mean(t) == pytest.approx({"gamma": 0.86, "blur": 0.70})
    assert list(per_shift_mean(t)) == ["gamma", "blur"]  # table order kept


def test_summary_and_grid():
    s = robustness_summary(table())
    assert s["clean_auc"] == 0.90 and s["mca"] == pytest.approx(0.78)
    assert s["relative_drop"] == pytest.approx(0.12 / 0.90)
    assert s["triage_sensitivity"] == pytest.approx({"clean": 0.96, "mean_corrupted": 0.96})
    assert s["triage_specificity"] == pytest.approx({"clean": 0.40, "mean_corrupted": 0.30})
    grid = severity_grid(table())
    assert list(grid.index) == ["gamma", "blur"] and list(grid.columns) == [1, 2, 3, 4, 5]
    assert grid.loc["blur", 3] == 0.70


def test_nan_is_skipped_and_undefined_is_nan():
    t = table()
    t.loc[(t["shift"] == "blur") & (t["severity"] == 5), "macro_auc"] = np.nan
    assert per_shift_mean(t)["blur"] == pytest.approx(0.75)
    assert mean_corruption(t) == pytest.approx((4.30 + 3.00) / 9)
    assert math.isnan(relative_drop(0.0, 0.5)) and math.isnan(relative_drop(float("nan"), 0.5))
    assert math.isnan(mean_corruption(t[t["severity"] == 0]))  # no shifted rows: nothing to average


def test_clean_row_must_be_single():
    with pytest.raises(ValueError, match="one clean"):
        clean_value(table()[table()["severity"] > 0])
