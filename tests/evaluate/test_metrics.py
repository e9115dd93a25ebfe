"""Metrics agree with scikit-learn; NaN labels ignored; single-class labels give NaN, not a crash."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    fbeta_score,
    hamming_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from cxrkit.evaluate.metrics import (
    Ranked,
    ap_from_counts,
    auc_from_counts,
    average_precision,
    confusion_counts,
    macro_ap,
    macro_auc,
    micro_ap,
    micro_auc,
    micro_threshold_metrics,
    multilabel_accuracy,
    per_label_ap,
    per_label_auc,
    pr_curve_points,
    rates_from_counts,
    roc_auc,
    roc_curve_points,
    summary_metrics,
    threshold_metrics,
)


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 60), st.integers(0, 10_000), st.booleans())
def test_roc_auc_matches_sklearn_including_ties(n, seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 4, n).astype(float) if ties else rng.random(n)
    if y.min() == y.max():
        with pytest.warns(RuntimeWarning):
            assert np.isnan(roc_auc(y, s))
    else:
        assert np.isclose(roc_auc(y, s), roc_auc_score(y, s))


def test_macro_micro_and_nan_masking_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4)).astype(float)
    s = rng.random((200, 4)) + 0.3 * y
    assert np.isclose(macro_auc(y, s), roc_auc_score(y, s, average="macro"))
    assert np.isclose(micro_auc(y, s), roc_auc_score(y, s, average="micro"))
    y_nan = y.copy()
    y_nan[:50, 0] = np.nan
    assert np.isclose(per_label_auc(y_nan, s)[0], roc_auc_score(y[50:, 0], s[50:, 0]))


def test_threshold_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 3))
    s = rng.random((300, 3))
    t = threshold_metrics(y, s, 0.4)
    pred = (s >= 0.4).astype(int)
    for j in range(3):
        assert np.isclose(t["precision"][j], precision_score(y[:, j], pred[:, j]))
        assert np.isclose(t["recall"][j], recall_score(y[:, j], pred[:, j]))
        assert np.isclose(t["f1"][j], f1_score(y[:, j], pred[:, j]))
    m = summary_metrics(y, s, 0.4)
    assert np.isclose(m["micro_f1"], f1_score(y, pred, average="micro"))
    assert np.isclose(m["macro_f1"], f1_score(y, pred, average="macro"))


def test_single_class_label_is_nan_and_skipped_in_macro():
    y = np.array([[0, 1], [0, 0], [0, 1]], dtype=float)
    s = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8]])
    with pytest.warns(RuntimeWarning, match="label 0"):
        aucs = per_label_auc(y, s, ["label 0", "label 1"])
    assert np.isnan(aucs[0]) and aucs[1] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert macro_auc(y, s) == 1.0


def _data(seed: int, n: int, n_labels: int, nan_share: float = 0.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, n_labels)).astype(float)
    s = (
        rng.integers(0, 5, (n, n_labels)) / 4.0
        if ties
        else np.clip(rng.random((n, n_labels)) + 0.2 * y, 0, 1)
    )
    if nan_share:
        y[rng.random((n, n_labels)) < nan_share] = np.nan
    return y, s


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(4, 80), st.integers(1, 5), st.booleans())
def test_average_precision_per_label_macro_micro_match_sklearn(seed, n, n_labels, ties):
    y, s = _data(seed, n, n_labels, ties=ties)
    two_class = [j for j in range(n_labels) if 0 < y[:, j].sum() < n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ap = per_label_ap(y, s)
        auc = per_label_auc(y, s)
        for j in range(n_labels):
            if j in two_class:
                assert np.isclose(ap[j], average_precision_score(y[:, j], s[:, j]))
                assert np.isclose(auc[j], roc_auc_score(y[:, j], s[:, j]))
            else:
                assert np.isnan(ap[j]) and np.isnan(auc[j])
        if two_class:
            yc, sc = y[:, two_class], s[:, two_class]
            assert np.isclose(macro_ap(y, s), average_precision_score(yc, sc, average="macro"))
            assert np.isclose(macro_auc(y, s), roc_auc_score(yc, sc, average="macro"))
        if 0 < y.sum() < y.size:
            assert np.isclose(micro_ap(y, s), average_precision_score(y, s, average="micro"))
            assert np.isclose(micro_auc(y, s), roc_auc_score(y, s, average="micro"))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10_000), st.integers(2, 80), st.floats(0.05, 0.95), st.sampled_from([0.5, 1.0, 2.0, 3.0])
)
def test_threshold_metrics_and_multilabel_accuracy_match_sklearn(seed, n, threshold, beta):
    y, s = _data(seed, n, 3)
    pred = (s >= threshold).astype(int)
    t = threshold_metrics(y, s, threshold, beta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(3):
            yj, pj = y[:, j].astype(int), pred[:, j]
            if pj.sum():
                assert np.isclose(t["precision"][j], precision_score(yj, pj))
            else:
                assert np.isnan(t["precision"][j])
            if yj.sum():
                assert np.isclose(t["recall"][j], recall_score(yj, pj))
                assert np.isclose(t["fbeta"][j], fbeta_score(yj, pj, beta=beta))
                assert np.isclose(t["f1"][j], f1_score(yj, pj))
            if (1 - yj).sum():
                assert np.isclose(t["specificity"][j], recall_score(1 - yj, 1 - pj))
        m = summary_metrics(y, s, threshold, beta)
        if y.sum() and pred.sum():
            assert np.isclose(m["micro_fbeta"], fbeta_score(y, pred, beta=beta, average="micro"))
            assert np.isclose(m["micro_precision"], precision_score(y, pred, average="micro"))
            assert np.isclose(m["micro_recall"], recall_score(y, pred, average="micro"))
    acc = multilabel_accuracy(y, s, threshold)
    assert np.isclose(acc["hamming_loss"], hamming_loss(y.astype(int), pred))
    assert np.isclose(acc["subset_accuracy"], accuracy_score(y.astype(int), pred))
    assert np.isclose(acc["binary_accuracy"], 1 - hamming_loss(y.astype(int), pred))


def test_per_label_threshold_vector_and_nan_entries_are_ignored():
    y, s = _data(3, 200, 3, nan_share=0.2)
    th = np.array([0.3, 0.5, 0.7])
    t = threshold_metrics(y, s, th)
    for j in range(3):
        known = ~np.isnan(y[:, j])
        yj, pj = y[known, j].astype(int), (s[known, j] >= th[j]).astype(int)
        assert np.isclose(t["f1"][j], f1_score(yj, pj))
        assert t["support"][j] == yj.sum()
        assert np.isclose(average_precision(y[:, j], s[:, j]), average_precision_score(yj, s[known, j]))
    c = confusion_counts(y, s, th)
    assert (c["tp"] + c["fp"] + c["tn"] + c["fn"] == (~np.isnan(y)).sum(0)).all()
    acc = multilabel_accuracy(y, s, th)
    wrong = ((s >= th) != (y > 0.5)) & ~np.isnan(y)
    assert np.isclose(acc["hamming_loss"], wrong.sum() / (~np.isnan(y)).sum())


def test_weighted_counts_match_sklearn_sample_weight():
    y, s = _data(5, 150, 1, ties=True)
    w = np.random.default_rng(5).integers(0, 4, 150).astype(float)
    r = Ranked.build(y[:, 0], s[:, 0])
    pos, neg = r.counts(w[None])
    assert np.isclose(auc_from_counts(pos, neg)[0], roc_auc_score(y[:, 0], s[:, 0], sample_weight=w))
    assert np.isclose(ap_from_counts(pos, neg)[0], average_precision_score(y[:, 0], s[:, 0], sample_weight=w))


def test_curve_points_match_sklearn():
    y, s = _data(7, 120, 1)
    fpr, tpr = roc_curve_points(y[:, 0], s[:, 0])
    ref_fpr, ref_tpr, _ = roc_curve(y[:, 0], s[:, 0], drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr) and np.allclose(tpr, ref_tpr)
    rec, prec = pr_curve_points(y[:, 0], s[:, 0])
    ref_p, ref_r, _ = precision_recall_curve(y[:, 0], s[:, 0], drop_intermediate=False)
    assert np.allclose(rec, ref_r[::-1][1:]) and np.allclose(prec, ref_p[::-1][1:])


def test_headline_averages_cover_the_findings_and_no_finding_stands_alone():
    """ChestX-ray14's macro AUC in the literature is over the 14 findings: "No Finding" is not averaged in."""
    from sklearn.metrics import roc_auc_score

    from cxrkit.evaluate.bootstrap import ranking_cis
    from cxrkit.labels import NO_FINDING, finding_columns

    rng = np.random.default_rng(7)
    labels = ["Effusion", NO_FINDING, "Mass"]
    y = (rng.random((300, 3)) < [0.3, 0.5, 0.2]).astype(float)
    p = np.clip(y * [0.3, 0.9, 0.1] + rng.random((300, 3)) * 0.8, 0, 1)  # No Finding is far easier
    m = summary_metrics(y, p, 0.5, labels=labels)
    per = [roc_auc_score(y[:, j], p[:, j]) for j in range(3)]
    assert finding_columns(labels) == [0, 2] and m["macro_labels"] == 2
    assert m["macro_auc"] == pytest.approx((per[0] + per[2]) / 2)
    assert m["no_finding_auc"] == pytest.approx(per[1])
    assert m["micro_auc"] == pytest.approx(roc_auc_score(y[:, [0, 2]].ravel(), p[:, [0, 2]].ravel()))
    cis = ranking_cis(y, p, np.arange(300), n_boot=0, average=[0, 2])
    assert cis.macro_auc.value == pytest.approx(m["macro_auc"]) and cis.micro_auc.value == pytest.approx(
        m["micro_auc"]
    )
    assert summary_metrics(y, p, 0.5)["macro_auc"] == pytest.approx(
        np.mean(per)
    )  # without labels: all columns
    assert finding_columns([NO_FINDING]) == [0]


def test_defaults_are_threshold_half_and_beta_one():
    y, s = _data(11, 60, 2)
    full = threshold_metrics(y, s, 0.5, 1.0)
    for got in (threshold_metrics(y, s), threshold_metrics(y, s, 0.5)):
        assert all(np.allclose(got[k], full[k], equal_nan=True) for k in full)
    assert np.allclose(full["fbeta"], full["f1"])  # beta 1 is F1
    assert confusion_counts(y, s)["tp"].tolist() == confusion_counts(y, s, 0.5)["tp"].tolist()
    assert summary_metrics(y, s) == pytest.approx(summary_metrics(y, s, 0.5, 1.0), nan_ok=True)
    assert summary_metrics(y, s)["macro_fbeta"] == pytest.approx(summary_metrics(y, s)["macro_f1"])
    assert multilabel_accuracy(y, s) == multilabel_accuracy(y, s, 0.5)
    assert micro_threshold_metrics(y, s) == pytest.approx(micro_threshold_metrics(y, s, 0.5, 1.0))
    assert micro_threshold_metrics(y, s)["fbeta"] == pytest.approx(micro_threshold_metrics(y, s)["f1"])
    assert rates_from_counts(3, 1, 5, 2)["fbeta"] == pytest.approx(rates_from_counts(3, 1, 5, 2)["f1"])


def test_accuracy_per_label_and_a_score_equal_to_the_threshold_is_positive():
    y, s = _data(12, 90, 3)
    s[:5] = 0.4  # exactly at the threshold: predicted positive
    t = threshold_metrics(y, s, 0.4)
    pred = s >= 0.4
    assert pred[:5].all()
    for j in range(3):
        assert t["accuracy"][j] == pytest.approx(accuracy_score(y[:, j], pred[:, j]))
    assert confusion_counts(y[:5], s[:5], 0.4)["fn"].sum() == 0
    assert multilabel_accuracy(y[:5], s[:5], 0.4)["hamming_loss"] == pytest.approx((y[:5] == 0).mean())
    assert rates_from_counts(0, 0, 0, 0)["precision"] != rates_from_counts(0, 0, 0, 0)["precision"]  # NaN


def test_one_class_and_empty_inputs_give_nan_or_empty_curves_with_a_warning_at_the_caller():
    y1, s = np.ones(4), np.array([0.1, 0.4, 0.35, 0.8])
    with pytest.warns(RuntimeWarning, match="only one class") as rec:
        assert np.isnan(average_precision(y1, s))  # all positive: AP is NaN, as AUC, not 1
    assert rec[0].filename == __file__  # the warning points at the caller's line
    with pytest.warns(RuntimeWarning, match="one class present") as rec:
        per_label_ap(np.c_[y1, [0, 1, 0, 1]], np.c_[s, s])
    assert rec[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="only one class") as rec:
        roc_auc(1 - y1, s)
    assert rec[0].filename == __file__
    for curve in (roc_curve_points, pr_curve_points):
        assert [len(a) for a in curve(np.zeros(4), s)] == [0, 0]
    assert [len(a) for a in roc_curve_points(y1, s)] == [0, 0]
    rec_, prec = pr_curve_points(y1, s)  # all positive: precision 1 at every recall
    assert np.allclose(prec, 1) and rec_[-1] == 1
    nothing = Ranked.build(np.full(3, np.nan), np.arange(3.0))  # no known label at all
    assert nothing.rows.size == 0 and nothing.scores.size == 0
    pos, neg = nothing.counts(np.ones((2, 3)))
    assert pos.shape == neg.shape == (2, 0) and np.isnan(auc_from_counts(pos, neg)).all()
