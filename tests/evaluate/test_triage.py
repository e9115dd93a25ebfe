"""Triage scores, truth, operating point, sweep and worklist."""

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluate.triage import (
    abnormal_truth,
    abnormality_score,
    add_unscored,
    build_worklist,
    operating_point,
    top_findings,
    triage_counts,
    triage_sweep,
)
from cxrkit.labels import NO_FINDING

LABELS = ["Effusion", "Mass", NO_FINDING]


def test_scores():
    p = np.array([[0.5, 0.2, 0.3], [0.0, 0.0, 0.9]])
    s, m = abnormality_score(p, LABELS)
    assert m == "no_finding" and np.allclose(s, [0.7, 0.1])
    s, _ = abnormality_score(p, LABELS, "noisy_or")
    assert np.allclose(s, [1 - 0.5 * 0.8, 0.0])
    assert np.allclose(abnormality_score(p, LABELS, "max")[0], [0.5, 0.0])
    s, m = abnormality_score(p[:, :2], LABELS[:2])
    assert m == "noisy_or"
    with pytest.raises(ValueError, match="No Finding"):
        abnormality_score(p[:, :2], LABELS[:2], "no_finding")
    with pytest.raises(ValueError, match="expected one of"):
        abnormality_score(p, LABELS, "mean")


def test_truth_from_no_finding_or_any_finding():
    t = np.array([[1, 0, 0], [0, 0, 1], [np.nan, 0, np.nan], [np.nan, 1, np.nan]], dtype=float)
    assert np.allclose(abnormal_truth(t, LABELS), [1, 0, np.nan, np.nan], equal_nan=True)
    assert np.allclose(abnormal_truth(t[:, :2], LABELS[:2]), [1, 0, np.nan, 1], equal_nan=True)


def test_operating_point_counts_and_sweep():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    t = operating_point(y, s, 0.9)
    c = triage_counts(y, s, t)
    assert c["sensitivity"] >= 0.9
    assert c["reads_saved"] == ((s < t) & (y == 0)).sum() and c["missed"] == ((s < t) & (y == 1)).sum()
    assert c["flagged"] + c["reads_saved"] + c["missed"] == 400 and c["abnormal"] == y.sum()
    sweep = triage_sweep(y, s, t)
    assert sweep["chosen"].sum() == 1 and np.isclose(sweep.loc[sweep["chosen"], "threshold"].iloc[0], t)
    assert sweep["reads_saved"].is_monotonic_increasing and sweep["missed"].is_monotonic_increasing
    assert sweep["flagged"].iloc[0] == 400 and sweep["flagged"].iloc[-1] == 0


def test_worklist_most_urgent_first():
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["1", "2", "3"]})
    p = np.array([[0.1, 0.1, 0.9], [0.9, 0.6, 0.05], [0.4, 0.2, 0.5]])
    s, _ = abnormality_score(p, LABELS)
    w = build_worklist(meta, p, LABELS, s, 0.5, truth=np.array([0, 1, np.nan]))
    assert list(w["image_id"]) == ["b", "c", "a"] and list(w["rank"]) == [1, 2, 3]
    assert list(w["flag"]) == ["abnormal", "abnormal", "normal"]
    assert w["top_findings"].iloc[0].startswith("Effusion 0.90; Mass 0.60")
    assert list(w["truth"]) == ["abnormal", "", "normal"]


def test_counts_and_shares_equal_a_hand_confusion_matrix():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, np.nan, 1])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.1, 0.4, 0.99, 0.5])
    c = triage_counts(y, s, 0.5)  # TP 3 (0.9, 0.6, 0.5), FN 1, FP 1, TN 4; the NaN study is not counted
    assert (c["images"], c["abnormal"], c["flagged"], c["reads_saved"], c["missed"]) == (9, 4, 4, 4, 1)
    assert c["sensitivity"] == 3 / 4 and c["specificity"] == 4 / 5
    assert c["reads_saved_share"] == 4 / 9 and c["deferred_share"] == 5 / 9 and c["missed_share"] == 1 / 4


def test_truth_without_no_finding_is_any_known_finding():
    t = np.array([[0, 0], [1, 0], [0, 1], [0, np.nan], [1, np.nan]], dtype=float)
    assert np.allclose(abnormal_truth(t, LABELS[:2]), [0, 1, 1, np.nan, 1], equal_nan=True)


def test_default_operating_point_is_95_percent_sensitivity():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1), 3)
    t = operating_point(y, s)
    assert t == operating_point(y, s, 0.95) and triage_counts(y, s, t)["sensitivity"] >= 0.95
    assert triage_counts(y, s, np.unique(s[s > t]).min())["sensitivity"] < 0.95


def test_defaults_twenty_sweep_steps_and_three_top_findings():
    rng = np.random.default_rng(2)
    y, s = rng.integers(0, 2, 500).astype(float), rng.random(500)
    sweep = triage_sweep(y, s)
    assert len(sweep) == 22 and not sweep["chosen"].any()  # 21 quantiles (0%, 5%, ..., 100%) + flag none
    assert np.allclose(sweep["threshold"].iloc[:21], np.quantile(s, np.linspace(0, 1, 21)))
    labels = ["A", "B", "C", "D", NO_FINDING]
    p = np.array([[0.1, 0.9, 0.5, 0.3, 0.99]])
    assert top_findings(p, labels) == ["B 0.90; C 0.50; D 0.30"]
    meta = pd.DataFrame({"image_id": ["x"], "patient_id": ["1"]})
    w = build_worklist(meta, p, labels, np.array([0.4]), 0.5)
    assert w.columns[0] == "rank" and w["top_findings"].iloc[0] == "B 0.90; C 0.50; D 0.30"


def test_worklist_columns_rounding_and_missing_patient_ids():
    meta = pd.DataFrame({"image_id": ["b", "a"]})
    p = np.array([[0.2, 0.1, 0.7], [0.3, 0.3, 0.4]])
    w = build_worklist(meta, p, LABELS, np.array([0.1234567891, 0.5]), 0.3, truth=np.array([0.0, 1.0]))
    assert list(w.columns) == ["rank", "image_id", "patient_id", "score", "flag", "top_findings", "truth"]
    assert list(w.index) == [0, 1] and list(w["image_id"]) == ["a", "b"]
    assert list(w["score"]) == [0.5, 0.123457] and list(w["patient_id"]) == ["", ""]
    assert list(w["truth"]) == ["abnormal", "normal"]
    sweep = triage_sweep(np.array([0.0, 1.0]), np.array([0.2, 0.8]), 0.5)
    assert "index" not in sweep.columns and list(sweep.index) == list(range(len(sweep)))


def test_ties_sort_by_image_id_and_no_known_truth_gives_an_empty_sweep():
    meta = pd.DataFrame({"image_id": ["c", "a", "b"], "patient_id": ["1", "2", "3"]})
    p = np.array([[0.5, 0.1, 0.5], [0.5, 0.1, 0.5], [0.9, 0.1, 0.1]])
    w = build_worklist(meta, p, LABELS, np.array([0.5, 0.5, 0.9]), 0.5)
    assert list(w["image_id"]) == ["b", "a", "c"]  # equal scores: image ID order, reproducible
    sweep = triage_sweep(np.array([np.nan, np.nan]), np.array([0.2, 0.8]))
    assert len(sweep) == 0


def test_unscored_studies_head_the_worklist_ranked_from_one():
    meta = pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["p", "q"], "path": ["/x/a", "/x/b"]})
    probs = np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    score = np.array([0.9, 0.1])
    worklist = build_worklist(meta, probs, LABELS, score, 0.5)
    unscored = pd.DataFrame(
        {
            "image_id": ["c"],
            "patient_id": ["r"],
            "status": ["unreadable"],
            "note": ["unreadable: x — read manually"],
        }
    )
    out = add_unscored(worklist, unscored)
    assert out["rank"].tolist() == [1, 2, 3] and out.columns[0] == "rank"
    assert out.index.tolist() == [0, 1, 2]  # a fresh index: row k is rank k + 1
    assert out["image_id"].tolist() == ["c", "a", "b"] and out["flag"].tolist() == [
        "unreadable",
        "abnormal",
        "normal",
    ]
    assert out["path"].tolist() == ["", "/x/a", "/x/b"]  # the worklist has paths, the unscored study none
    assert np.isnan(out["score"].iloc[0]) and out["top_findings"].iloc[0].startswith("unreadable")
    no_paths = add_unscored(build_worklist(meta.drop(columns="path"), probs, LABELS, score, 0.5), unscored)
    assert "path" not in no_paths
    with_path = add_unscored(worklist.drop(columns="path"), unscored.assign(path=["/y/c"]))
    assert with_path["path"].tolist()[0] == "/y/c"
    assert add_unscored(worklist, unscored.iloc[:0]) is worklist


def test_a_study_without_a_score_is_never_a_read_saved_or_a_miss():
    c = triage_counts([0, 1, 0, 1, np.nan, 0], [np.nan, np.nan, 0.2, 0.9, np.nan, 0.1], 0.5)
    assert c["not_scored"] == 2 and c["images"] == 3  # the unknown-truth row is in neither count
    assert (c["reads_saved"], c["missed"], c["flagged"]) == (2, 0, 1)
    assert c["sensitivity"] == 1.0 and c["specificity"] == 1.0


def test_threshold_interval_resamples_patients_and_narrows_with_data():
    """The operating threshold's bootstrap interval: it holds the point threshold, shrinks as the
    validation set grows, and resamples patients (two identical images of one patient are one draw)."""
    from cxrkit.evaluate.triage import operating_point, threshold_interval

    def sample(n, seed):
        rng = np.random.default_rng(seed)
        y = (rng.random(n) < 0.4).astype(float)
        return y, y * 1.2 + rng.normal(0, 1, n)

    y, s = sample(300, 0)
    lo, hi = threshold_interval(y, s, 0.9, n_boot=300)
    assert lo <= operating_point(y, s, 0.9) <= hi
    y4, s4 = sample(4800, 1)
    lo4, hi4 = threshold_interval(y4, s4, 0.9, n_boot=300)
    assert (hi4 - lo4) < 0.6 * (hi - lo)  # 16x the data: about a quarter of the width
    twice = threshold_interval(np.repeat(y, 2), np.repeat(s, 2), 0.9, np.repeat(np.arange(300), 2), 300)
    assert twice == pytest.approx((lo, hi))  # patients, not images, are the units
    as_images = threshold_interval(np.repeat(y, 2), np.repeat(s, 2), 0.9, None, 300)
    assert as_images != pytest.approx((lo, hi))
