"""Naive baselines: majority is "No Finding" everywhere (AUC 0.5), always-abnormal flags every study."""

import numpy as np
import pytest

from cxrkit.evaluate.baselines import baseline_scores, training_prevalence
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, triage_counts
from cxrkit.labels import NO_FINDING

LABELS = ["Effusion", "Mass", NO_FINDING]


def _targets(n, seed=0):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 2)) < [0.2, 0.1]).astype(np.float32)
    return np.column_stack([t, (t.sum(1) == 0)]).astype(np.float32)


def test_majority_prevalence_and_always_abnormal():
    train, test = _targets(2000), _targets(500, 1)
    maj = baseline_scores("majority", train, 500, LABELS)
    assert (maj == [0, 0, 1]).all()
    m = summary_metrics(test, maj)
    assert m["macro_auc"] == 0.5 and m["binary_accuracy"] > 0.75
    prev = baseline_scores("prevalence", train, 20000, LABELS, seed=3)
    assert np.allclose(prev.mean(0), training_prevalence(train), atol=0.02)
    always = baseline_scores("always_abnormal", train, 500, LABELS)
    s, _ = abnormality_score(always, LABELS)
    c = triage_counts(abnormal_truth(test, LABELS), s, 0.5)
    assert c["sensitivity"] == 1.0 and c["reads_saved"] == 0
    with pytest.raises(ValueError, match="baseline"):
        baseline_scores("oracle", train, 5, LABELS)


def test_prevalence_among_known_entries_and_exact_shapes():
    nan = np.nan
    train = np.array([[1, nan, 1], [0, nan, 0], [1, nan, 0], [0, nan, 1]], dtype=np.float32)
    assert training_prevalence(train).tolist() == [0.5, 0.0, 0.5]  # nothing known: 0
    maj = baseline_scores("majority", train, 3, LABELS)
    assert maj.shape == (3, 3) and (maj == 0).all()  # a tie (prevalence 0.5) is not a majority
    always = baseline_scores("always_abnormal", train, 4, LABELS)
    assert always.shape == (4, 3) and (always == [1, 1, 0]).all()
    draws = baseline_scores("prevalence", _targets(200), 50, LABELS)
    assert draws.shape == (50, 3) and np.array_equal(
        draws, baseline_scores("prevalence", _targets(200), 50, LABELS, 0)
    )


def test_prevalence_of_a_label_known_once_and_of_one_never_known():
    t = np.array([[1.0, np.nan, 0.0], [np.nan, np.nan, 1.0], [np.nan, np.nan, 1.0]])
    assert training_prevalence(t) == pytest.approx([1.0, 0.0, 2 / 3])
