"""Subgroup (fairness) slices: every row is the metric of its own slice (checked against scikit-learn),
small slices show counts only, and per-label columns carry their own label's AUC."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cxrkit.evaluate.fairness import subgroup_label_auc, subgroup_table


@pytest.fixture
def slices():
    """400 images; the model is good for men and weak for women, and its two labels differ in skill."""
    rng = np.random.default_rng(0)
    n = 400
    sex = rng.choice(["M", "F"], n)
    meta = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": [f"p{k // 2}" for k in range(n)],
            "sex": sex,
            "age": np.r_[
                rng.integers(20, 90, n - 15), [0, 6, 7, 8, 17], [18, 39, 40, 59, 60, 79, 80, 80, 99, 18]
            ],
            "view": rng.choice(["PA", "AP"], n),
        }
    )
    y = (rng.random((n, 2)) < [0.3, 0.5]).astype(float)
    skill = np.where(sex == "M", 0.8, 0.25)[:, None] * [1.0, 0.4]  # label B weaker than A
    p = np.clip(skill * y + (1 - skill) * rng.random((n, 2)), 0, 1)
    y[::37, 1] = np.nan  # a few unknown labels
    abnormal = np.nanmax(y, 1)
    score = np.nanmax(p, 1)
    return meta, y, p, abnormal, score


def _slice_masks(meta):
    for attr in ("sex", "view"):
        for group in meta[attr].unique():
            yield attr, group, (meta[attr] == group).to_numpy()
    age = meta["age"].to_numpy()
    for name, lo, hi in (
        ("0-17", 0, 17),
        ("18-39", 18, 39),
        ("40-59", 40, 59),
        ("60-79", 60, 79),
        ("80+", 80, 150),
    ):
        yield "age band", name, (age >= lo) & (age <= hi)


def _sk_per_label(y, p, fn):
    out = []
    for j in range(y.shape[1]):
        k = ~np.isnan(y[:, j])
        out.append(fn(y[k, j], p[k, j]) if len(np.unique(y[k, j])) == 2 else np.nan)
    return np.array(out)


def test_each_row_is_its_own_slice_against_sklearn(slices):
    meta, y, p, abnormal, score = slices
    thr = np.array([0.5, 0.4])
    t = subgroup_table(meta, y, p, thr, abnormal, score, 0.6).set_index(["attribute", "group"])
    assert len(t) == 2 + 2 + 5
    for attr, group, m in _slice_masks(meta):
        row = t.loc[(attr, group)]
        assert row["images"] == m.sum() and row["patients"] == meta.loc[m, "patient_id"].nunique()
        if m.sum() < 10:  # the five children: counts only
            assert np.isnan(row["macro_auc"]) and np.isnan(row["triage_sensitivity"])
            continue
        ys, ps = y[m], p[m]
        assert row["macro_auc"] == pytest.approx(np.nanmean(_sk_per_label(ys, ps, roc_auc_score)))
        assert row["macro_ap"] == pytest.approx(np.nanmean(_sk_per_label(ys, ps, average_precision_score)))
        known = ~np.isnan(ys)
        assert row["micro_auc"] == pytest.approx(roc_auc_score(ys[known], ps[known]))
        f1 = _sk_per_label(ys, ps >= thr, lambda a, b: f1_score(a, b))
        assert row["macro_f1"] == pytest.approx(np.mean(f1))
        flag, ab = score[m] >= 0.6, abnormal[m] == 1
        assert row["triage_sensitivity"] == pytest.approx((flag & ab).sum() / ab.sum())
        assert row["triage_specificity"] == pytest.approx((~flag & ~ab).sum() / (~ab).sum())
        assert row["abnormal_share"] == pytest.approx(ab.mean())
    # the slices really differ, so a metric computed on the whole set could not pass the loop above
    assert t.loc[("sex", "M"), "macro_auc"] > t.loc[("sex", "F"), "macro_auc"] + 0.2


def test_per_label_columns_carry_their_own_label(slices):
    meta, y, p, *_ = slices
    aucs = subgroup_label_auc(meta, y, p, ["A", "B"]).set_index(["attribute", "group"])
    assert ("age band", "0-17") not in aucs.index  # under 10 images
    for attr, group, m in _slice_masks(meta):
        if m.sum() < 10:
            continue
        expect = _sk_per_label(y[m], p[m], roc_auc_score)
        assert aucs.loc[(attr, group), ["A", "B"]].to_numpy() == pytest.approx(expect)
    assert aucs.loc[("sex", "M"), "A"] > aucs.loc[("sex", "M"), "B"] + 0.05  # reversing A/B would show


def test_without_slice_attributes_the_table_is_empty(slices):
    meta, y, p, *_ = slices
    assert subgroup_table(meta[["image_id", "patient_id"]], y, p, np.array([0.5, 0.5])).empty


def test_slices_of_ten_images_are_scored_nine_are_not_and_missing_values_join_none():
    rng = np.random.default_rng(4)
    sex = np.array(["M"] * 10 + ["F"] * 9 + [None] * 5, dtype=object)
    n = len(sex)
    meta = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)]})
    meta["sex"] = sex
    y = np.tile([[0.0, 1.0], [1.0, 0.0]], (n // 2, 1))
    p = rng.random((n, 2))
    table = subgroup_table(meta, y, p, np.full(2, 0.5)).set_index("group")
    assert table.loc["M", "images"] == 10 and table.loc["F", "images"] == 9
    assert np.isfinite(table.loc["M", "macro_auc"]) and np.isnan(table.loc["F", "macro_auc"])
    assert "triage_sensitivity" not in table  # no abnormal truth, score and threshold: no triage columns
    partial = subgroup_table(meta, y, p, np.full(2, 0.5), abnormal=y[:, 0], abnormal_score=p[:, 0])
    assert "triage_sensitivity" not in partial  # still no threshold
    per = subgroup_label_auc(meta, y, p, ["A", "B"])
    assert list(per["group"]) == ["M"]
    m = sex == "M"
    assert per.loc[0, "A"] == pytest.approx(roc_auc_score(y[m, 0], p[m, 0]))
    with pytest.raises(ValueError):
        subgroup_label_auc(meta, y, p, ["A", "B", "C"])
