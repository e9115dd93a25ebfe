"""Threshold rules pick what they promise on validation; fixed rules parse; bad rules are refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrkit.evaluate.metrics import threshold_metrics
from cxrkit.evaluate.thresholds import choose_threshold, choose_thresholds, parse_rule


def _val(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    y[:2] = [0, 1]
    return y, np.round(rng.random(n) * 0.6 + 0.4 * y, 3)  # rounded: ties happen


def _rates(y, s, t):
    pred = s >= t
    tp, fp = (pred & (y > 0)).sum(), (pred & (y == 0)).sum()
    return tp / (y > 0).sum(), fp / (y == 0).sum(), tp, fp


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 1.0))
def test_target_sensitivity_is_the_highest_threshold_reaching_it(seed, target):
    y, s = _val(seed)
    t = choose_threshold(y, s, f"sensitivity:{target}")
    assert t in s  # a validation score: the validation numbers are exact
    assert _rates(y, s, t)[0] >= target - 1e-12
    higher = np.unique(s[s > t])
    if higher.size:  # the next higher score no longer reaches the target
        assert _rates(y, s, higher.min())[0] < target


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1.0, 2.0, 3.0]))
def test_max_fbeta_and_youden_match_brute_force(seed, beta):
    y, s = _val(seed)
    cands = np.unique(s)
    fb = [threshold_metrics(y[:, None], s[:, None], c, beta)["fbeta"][0] for c in cands]
    t = choose_threshold(y, s, f"max_f{beta:g}")
    assert np.isclose(threshold_metrics(y[:, None], s[:, None], t, beta)["fbeta"][0], max(fb))
    j = [(_rates(y, s, c)[0] - _rates(y, s, c)[1]) for c in cands]
    t = choose_threshold(y, s, "youden")
    assert np.isclose(_rates(y, s, t)[0] - _rates(y, s, t)[1], max(j))


def test_rules_parse_and_bad_ones_are_refused():
    assert str(parse_rule("0.2")) == "0.2" and parse_rule(0.5).value == 0.5
    assert str(parse_rule("MAX_F3")) == "max_f3" and str(parse_rule("sens:0.9")) == "sensitivity:0.9"
    assert parse_rule("youden").method == "youden"
    for bad in ("1.5", "max_f0", "sensitivity:1.2", "best", "sensitivity:"):
        with pytest.raises(ValueError, match="threshold"):
            parse_rule(bad)


def test_per_label_vector_and_fallback_for_a_label_without_positives():
    y = np.stack([_val(1)[0], np.zeros(300)], 1)
    s = np.stack([_val(1)[1], _val(2)[1]], 1)
    with pytest.warns(RuntimeWarning, match="Mass: validation has 0 positives"):
        th = choose_thresholds(y, s, "max_f1", ["Effusion", "Mass"])
    assert th[1] == 0.5 and th[0] == choose_threshold(y[:, 0], s[:, 0], "max_f1")
    assert (choose_thresholds(y, s, "0.2") == 0.2).all()


@pytest.mark.parametrize("beta", [0.5, 2.0, 3.0])
def test_max_fbeta_weights_recall_by_beta_squared(beta):
    for seed in range(12):
        y, s = _val(100 + seed, 120)
        cands = np.unique(s)
        fb = [threshold_metrics(y[:, None], s[:, None], c, beta)["fbeta"][0] for c in cands]
        t = choose_threshold(y, s, f"max_f{beta:g}")
        assert threshold_metrics(y[:, None], s[:, None], t, beta)["fbeta"][0] == pytest.approx(max(fb))


def test_rule_boundaries_and_fallbacks():
    assert parse_rule("0").value == 0.0 and parse_rule("1").value == 1.0
    assert parse_rule("sensitivity:1").value == 1.0
    with pytest.raises(ValueError, match="threshold"):
        parse_rule("sensitivity:0")
    y, s = np.ones(5), np.array([0.3, 0.9, 0.5, 0.7, 0.2])
    with pytest.warns(RuntimeWarning, match="5 positives and 0 negatives") as rec:
        assert choose_threshold(y, s, "youden") == 0.5  # Youden needs negatives: the fallback
    assert rec[0].filename == __file__  # the warning points at the caller
    assert choose_threshold(y, s, "max_f1") == 0.2  # all positive: flag everything
    assert choose_threshold(y, s, "sensitivity:0.6") == 0.5  # the 3rd highest score reaches 3/5 exactly


@pytest.mark.parametrize("beta", [0.5, 2.0, 3.0])
def test_max_fbeta_on_overlapping_rare_positives_matches_sklearn(beta):
    """Overlapping scores and 20% prevalence: the chosen threshold reaches the best F-beta of any
    (precision and recall counted per candidate by hand; scikit-learn's F-beta at the choice)."""
    from sklearn.metrics import fbeta_score

    for seed in range(6):
        rng = np.random.default_rng(seed)
        y = (rng.random(300) < 0.2).astype(float)
        y[:2] = [0, 1]
        s = rng.normal(0, 1, 300) + 1.2 * y
        flagged = s[None, :] >= np.unique(s)[:, None]  # one row per candidate threshold
        tp = (flagged & (y == 1)).sum(1)
        precision, recall = tp / flagged.sum(1), tp / (y == 1).sum()
        b2 = beta**2
        with np.errstate(invalid="ignore"):
            best = np.nanmax((1 + b2) * precision * recall / (b2 * precision + recall))
        t = choose_threshold(y, s, f"max_f{beta:g}")
        assert fbeta_score(y, s >= t, beta=beta) == pytest.approx(best, rel=1e-12), seed


def test_reached_means_at_or_above_the_target_up_to_float_rounding():
    from cxrkit.evaluate.thresholds import SENSITIVITY_SLACK, reaches

    assert reaches(0.95, 0.95) and reaches(0.96, 0.95)
    assert reaches(0.95 - SENSITIVITY_SLACK / 2, 0.95)  # rounding in n_hit / n_pos
    assert reaches(0.95 - SENSITIVITY_SLACK, 0.95)  # the slack itself is still reached
    assert not reaches(0.94, 0.95) and not reaches(0.95 - 2 * SENSITIVITY_SLACK, 0.95)
    assert not reaches(float("nan"), 0.95)  # no abnormal study in validation: nothing was reached
