"""Cohen's kappa against scikit-learn, its edge cases, the study bootstrap and the Wilson shares."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from cxrkit.evaluate.agreement import binary_agreement, cohen_kappa, kappa_ci, share_ci
from cxrkit.evaluate.sample_size import wilson_interval


@pytest.mark.parametrize("seed", range(8))
def test_kappa_equals_sklearn_on_random_calls(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    a = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
    b = np.where(rng.random(n) < rng.uniform(0.3, 1.0), a, rng.integers(0, 2, n))
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 0, 1, 0], [1, 0, 1, 0], 1.0),  # perfect agreement
        ([1, 0, 1, 0], [0, 1, 0, 1], -1.0),  # perfect disagreement, balanced
        ([1, 1, 1], [0, 0, 0], 0.0),  # each rater constant, opposite classes: p_o = p_e = 0
        ([1, 1, 0, 0], [1, 1, 1, 1], 0.0),  # one rater constant: no agreement beyond chance
    ],
)
def test_kappa_edge_cases_match_sklearn(a, b, expected):
    assert cohen_kappa(a, b) == pytest.approx(expected)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_kappa_is_nan_where_undefined():
    """Both raters give one and the same class throughout (p_e = 1), or there are no pairs at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on its 0/0
        assert np.isnan(cohen_kappa_score([1, 1, 1], [1, 1, 1]))
    assert np.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))
    assert np.isnan(cohen_kappa([0, 0], [0, 0]))
    assert np.isnan(cohen_kappa([], []))
    assert np.isnan(kappa_ci([], [], n_boot=100).value)


def test_kappa_refuses_unknown_or_unpaired_calls():
    with pytest.raises(ValueError, match="binary"):
        cohen_kappa([1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="binary"):
        cohen_kappa([1, 2], [1, 0])
    with pytest.raises(ValueError, match="one length"):
        cohen_kappa([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="groups"):
        kappa_ci([1, 0, 1], [1, 0, 0], groups=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="n_boot"):
        kappa_ci([1, 0, 1], [1, 0, 0], n_boot=-1)


def test_kappa_ci_is_a_seeded_percentile_interval_around_the_point():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.8, a, 1 - a)
    ci = kappa_ci(a, b, n_boot=500, seed=1)
    assert ci.value == pytest.approx(cohen_kappa_score(a, b))
    assert ci.low < ci.value < ci.high and ci.replicates == 500
    assert kappa_ci(a, b, n_boot=500, seed=1) == ci
    assert kappa_ci(a, b, n_boot=500, seed=2) != ci
    # a hand-rolled bootstrap of the same size lands on nearly the same interval
    idx = np.random.default_rng(9).integers(0, 200, (2000, 200))
    reps = [cohen_kappa_score(a[i], b[i]) for i in idx]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=0.03) and ci.high == pytest.approx(hi, abs=0.03)
    assert np.isnan(kappa_ci(a, b, n_boot=0).low)


def test_kappa_ci_resamples_studies_not_calls():
    """Each pair read twice on one study: resampling studies gives the interval of the pairs read once,
    while resampling the calls one by one would pretend to twice the data (a narrower interval)."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, 60)
    b = np.where(rng.random(60) < 0.7, a, 1 - a)
    once = kappa_ci(a, b, n_boot=400, seed=0, groups=np.arange(60))
    twice = kappa_ci(np.repeat(a, 2), np.repeat(b, 2), n_boot=400, seed=0, groups=np.repeat(np.arange(60), 2))
    assert (twice.low, twice.high) == pytest.approx((once.low, once.high))
    naive = kappa_ci(np.repeat(a, 2), np.repeat(b, 2), n_boot=400, seed=0)
    assert naive.high - naive.low < 0.85 * (once.high - once.low)


def test_binary_agreement_counts_equal_the_confusion_matrix():
    rng = np.random.default_rng(5)
    model, reader = rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    got = binary_agreement(model, reader, n_boot=50)
    (tn, fn), (fp, tp) = confusion_matrix(model, reader)  # rows: model 0/1, columns: reader 0/1
    assert (got["both_present"], got["model_only"], got["reader_only"], got["both_absent"]) == (
        tp,
        fp,
        fn,
        tn,
    )
    assert got["n"] == 80 and got["agreement"] == pytest.approx((tp + tn) / 80)
    assert got["kappa"] == pytest.approx(cohen_kappa_score(model, reader))


def test_share_ci_is_the_wilson_interval():
    got = share_ci(7, 10)
    assert got["value"] == 0.7 and (got["low"], got["high"]) == wilson_interval(7, 10) and got["n"] == 10
    assert np.isnan(share_ci(0, 0)["value"]) and np.isnan(share_ci(0, 0)["low"])
