"""Patient-bootstrap intervals: contain the estimate, narrow with data, resample patients not images."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrkit.evaluate.bootstrap import interval, patient_weights, ranking_cis, rate_cis
from cxrkit.evaluate.metrics import macro_ap, macro_auc, micro_ap, micro_auc, per_label_auc


def _data(n_patients: int, per_patient: int, seed: int, signal: float = 0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n_patients, 3)).astype(float)
    s = rng.normal(size=(n_patients, 3)) + signal * y
    y, s = np.repeat(y, per_patient, 0), np.repeat(s, per_patient, 0)  # a patient's images agree
    s = s + rng.normal(scale=0.05, size=s.shape)
    return y, s, np.repeat(np.arange(n_patients), per_patient)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(60, 200), st.integers(1, 3))
def test_intervals_contain_the_point_estimate(seed, n_patients, per_patient):
    y, s, g = _data(n_patients, per_patient, seed)
    c = ranking_cis(y, s, g, n_boot=200, seed=seed)
    assert np.isclose(c.macro_auc.value, macro_auc(y, s)) and np.isclose(c.micro_auc.value, micro_auc(y, s))
    assert np.isclose(c.macro_ap.value, macro_ap(y, s)) and np.isclose(c.micro_ap.value, micro_ap(y, s))
    assert np.allclose([i.value for i in c.auc], per_label_auc(y, s))
    for i in [*c.auc, *c.ap, c.macro_auc, c.macro_ap, c.micro_auc, c.micro_ap]:
        assert i.low <= i.value <= i.high and i.replicates == 200


def test_intervals_narrow_as_data_grows():
    widths = []
    for n in (100, 400, 1600):
        y, s, g = _data(n, 1, seed=1)
        c = ranking_cis(y, s, g, n_boot=300)
        widths.append(c.macro_auc.high - c.macro_auc.low)
    assert widths[0] > 1.5 * widths[1] > 2.25 * widths[2]  # about 1/sqrt(n): halves per 4x data


def test_patients_are_resampled_not_images():
    y, s, g = _data(150, 6, seed=2)
    for w in patient_weights(g, 50, seed=0):
        per_patient = w.reshape(len(w), 150, 6)
        assert (per_patient == per_patient[:, :, :1]).all()  # a patient's images share its weight
        assert np.allclose(per_patient[:, :, 0].sum(1), 150)  # 150 patients drawn per replicate
    by_patient = ranking_cis(y, s, g, n_boot=400)
    by_image = ranking_cis(y, s, np.arange(len(y)), n_boot=400)  # wrongly treats images as independent
    wide = by_patient.macro_auc.high - by_patient.macro_auc.low
    narrow = by_image.macro_auc.high - by_image.macro_auc.low
    assert wide > 1.8 * narrow  # six near-copies per patient: sqrt(6) ~ 2.4x wider


def test_rate_intervals():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500).astype(float)
    flagged = (y > 0) & (rng.random(500) < 0.9) | (rng.random(500) < 0.1)
    c = rate_cis(y, flagged, np.arange(500), n_boot=300)
    sens = ((flagged) & (y > 0)).sum() / (y > 0).sum()
    assert np.isclose(c["sensitivity"].value, sens)
    assert c["sensitivity"].low < sens < c["sensitivity"].high
    assert c["specificity"].high - c["specificity"].low < 0.15
    unknown = y.copy()
    unknown[:100] = np.nan  # unknown truth is neither positive nor negative
    k = rate_cis(unknown, flagged, np.arange(500), n_boot=0)
    spec = (~flagged[100:] & (y[100:] == 0)).sum() / (y[100:] == 0).sum()
    assert k["specificity"].value == pytest.approx(spec)
    assert k["sensitivity"].value == pytest.approx((flagged[100:] & (y[100:] == 1)).sum() / y[100:].sum())


def test_single_class_label_gives_nan_interval_not_a_crash():
    y, s, g = _data(80, 1, seed=3)
    y[:, 1] = 0
    c = ranking_cis(y, s, g, n_boot=50)
    assert np.isnan(c.auc[1].value) and np.isnan(c.auc[1].low)
    assert np.isfinite(c.macro_auc.value) and np.isfinite(c.macro_auc.low)


def test_defaults_seed_zero_and_a_95_percent_percentile_interval():
    g = np.repeat(np.arange(30), 2)
    first = np.vstack(list(patient_weights(g, 100)))
    assert np.array_equal(first, np.vstack(list(patient_weights(g, 100, 0))))
    # chunks only bound memory: the replicates are the same whatever the chunk size
    assert np.array_equal(first, np.vstack(list(patient_weights(g, 100, 0, chunk=7))))
    assert first.shape == (100, 60) and (first.sum(1) == 60).all()  # 30 patients drawn, two images each
    reps = np.random.default_rng(0).normal(size=500)
    ci = interval(0.1, reps)
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    assert ci.replicates == 500 and np.isnan(interval(0.1, reps[:9]).low)


def test_every_interval_equals_a_hand_bootstrap_with_sklearn():
    """Replicates recomputed with scikit-learn's sample weights; a rare label is undefined in some of them,
    and those replicates average the labels they can score."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(40), 2)
    y = np.c_[rng.random(80) < 0.4, np.isin(g, [3, 17]), rng.random(80) < 0.3].astype(float)
    s = np.clip(0.4 * y + rng.random((80, 3)), 0, 1)
    c = ranking_cis(y, s, g, n_boot=120, seed=2, average=[0, 1])
    weights = np.vstack(list(patient_weights(g, 120, 2)))
    assert (weights[:, y[:, 1] == 1].sum(1) == 0).any()  # some replicates draw no rare positive

    def both(w, j, fn):
        return fn(y[:, j], s[:, j], sample_weight=w) if 0 < (w * y[:, j]).sum() < w.sum() else np.nan

    reps = {
        "macro_auc": [np.nanmean([both(w, j, roc_auc_score) for j in (0, 1)]) for w in weights],
        "macro_ap": [np.nanmean([both(w, j, average_precision_score) for j in (0, 1)]) for w in weights],
        "micro_auc": [
            roc_auc_score(y[:, :2].ravel(), s[:, :2].ravel(), sample_weight=np.repeat(w, 2)) for w in weights
        ],
        "micro_ap": [
            average_precision_score(y[:, :2].ravel(), s[:, :2].ravel(), sample_weight=np.repeat(w, 2))
            for w in weights
        ],
    }
    for key, r in reps.items():
        ci = getattr(c, key)
        assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(r, [0.025, 0.975]))), key
    label2 = [both(w, 2, roc_auc_score) for w in weights]
    assert (c.auc[2].low, c.auc[2].high) == pytest.approx(tuple(np.quantile(label2, [0.025, 0.975])))
    only_rare = ranking_cis(
        y, s, g, n_boot=120, seed=2, average=[1]
    )  # replicates without a positive: dropped
    assert (only_rare.macro_auc.low, only_rare.macro_auc.high) == (
        only_rare.auc[1].low,
        only_rare.auc[1].high,
    )
    assert only_rare.macro_auc.replicates == only_rare.auc[1].replicates < 120
    assert np.isfinite(interval(0.5, np.arange(10.0)).low)  # ten finite replicates are enough


def test_ranking_and_rate_defaults_are_1000_replicates_from_seed_zero():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(40), 2)
    y = (rng.random((80, 2)) < 0.4).astype(float)
    s = y + rng.normal(0, 1, (80, 2))
    default, explicit = ranking_cis(y, s, g), ranking_cis(y, s, g, n_boot=1000, seed=0)
    assert default.macro_auc == explicit.macro_auc and default.macro_auc.replicates == 1000
    r_default = rate_cis(y[:, 0], s[:, 0] > 0.5, g)
    assert r_default == rate_cis(y[:, 0], s[:, 0] > 0.5, g, n_boot=1000, seed=0)
    assert r_default["sensitivity"].replicates == 1000


def test_no_replicates_gives_nan_intervals_around_the_point():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    r = rate_cis(y, np.array([True, False, False, False]), np.arange(4), n_boot=0)
    assert r["sensitivity"].value == 0.5 and np.isnan(r["sensitivity"].low)
    assert r["specificity"].replicates == 0


def test_weighted_auc_ap_equals_the_per_group_counts_with_ties_and_zero_weights():
    """The bootstrap's fast path (sums at the tie groups holding a positive) against the full per-group
    counts it replaces, on scores with many ties, replicate weights with zeros, and degenerate labels."""
    from cxrkit.evaluate.metrics import Ranked, ap_from_counts, auc_from_counts, weighted_auc_ap

    rng = np.random.default_rng(5)
    for n, prevalence, levels in (
        (400, 0.3, 7),
        (300, 0.02, 50),
        (50, 0.0, 5),
        (50, 1.0, 5),
        (200, 0.5, 1000),
    ):
        y = (rng.random(n) < prevalence).astype(float)
        y[rng.random(n) < 0.05] = np.nan  # unknown entries are left out
        score = np.round(rng.random(n) * levels) / levels + 0.2 * np.nan_to_num(y)
        w = rng.poisson(1.0, (17, n)).astype(np.float32)
        r = Ranked.build(y, score)
        auc, ap = weighted_auc_ap(r, w)
        pos, neg = r.counts(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(auc, auc_from_counts(pos, neg), rtol=1e-12, equal_nan=True)
            np.testing.assert_allclose(ap, ap_from_counts(pos, neg), rtol=1e-12, equal_nan=True)
