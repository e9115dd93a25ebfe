"""Metrics agree with scikit-learn; NaN labels ignored; single-class labels give NaN, not a crash."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from cxrkit.evaluate.metrics import (
    macro_auc,
    micro_auc,
    per_label_auc,
    roc_auc,
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
