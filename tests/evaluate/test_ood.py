"""OOD scores: the shrunk covariance against scikit-learn, distances against scipy, the threshold's
flag rate on fresh in-distribution draws, and separation of a shifted cloud."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import LedoitWolf

from cxrkit.evaluate.ood import energy, fit_reference, ledoit_wolf, mahalanobis


def _clouds(n: int, dim: int = 12, seed: int = 0):
    mix = np.random.default_rng(99).normal(size=(dim, dim))  # one distribution, any number of draws
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 2, n)
    f = rng.normal(size=(n, dim)) @ mix + cls[:, None] * 3.0
    return f, cls.astype(float)


@pytest.mark.parametrize(("n", "dim"), [(200, 12), (30, 50)])
def test_ledoit_wolf_equals_scikit_learn(n, dim):
    x = np.random.default_rng(1).normal(size=(n, dim)) * np.linspace(1, 5, dim)
    x = x - x.mean(0)
    np.testing.assert_allclose(ledoit_wolf(x), LedoitWolf(assume_centered=True).fit(x).covariance_, rtol=1e-9)


def test_mahalanobis_is_the_nearest_class_distance_squared():
    f, cls = _clouds(300)
    ref = fit_reference(f, cls, f[:50], np.zeros((50, 2)), "multilabel")
    got = mahalanobis(f[:20], ref.means, ref.precision)
    want = [min(scipy_mahalanobis(x, m, ref.precision) ** 2 for m in ref.means) for x in f[:20]]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert ref.means.shape == (2, 12)
    np.testing.assert_allclose(ref.means[1] - ref.means[0], f[cls == 1].mean(0) - f[cls == 0].mean(0))


def test_the_threshold_flags_about_half_a_percent_of_fresh_in_distribution_draws_and_most_shifted():
    f, cls = _clouds(4000)
    val, _ = _clouds(2000, seed=1)
    ref = fit_reference(f, cls, val, np.zeros((len(val), 2)), "multilabel")
    assert ref.quantile == 0.995 and ref.threshold == pytest.approx(np.quantile(ref.val_scores, 0.995))
    fresh, _ = _clouds(4000, seed=2)
    rate = (ref.scores(fresh, None) > ref.threshold).mean()
    assert 0.001 <= rate <= 0.015
    shifted = fresh + 4.0 * np.random.default_rng(3).normal(size=fresh.shape[1])
    assert (ref.scores(shifted, None) > ref.threshold).mean() > 0.9
    assert ref.summary(fresh).shape == (4000, 8) and ref.val_summary.shape == (2000, 8)


def test_energy_is_minus_the_joint_softplus_or_minus_logsumexp():
    z = np.array([[0.0, 0.0], [5.0, -5.0], [-40.0, -40.0]])
    np.testing.assert_allclose(energy(z, "multilabel"), -np.log1p(np.exp(z)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(energy(z, "multiclass"), -np.log(np.exp(z).sum(1)), rtol=1e-12)
    assert energy(np.array([[800.0, 0.0]]), "multilabel")[0] == pytest.approx(
        -800.0 - np.log(2.0)
    )  # no overflow


def test_bad_settings_are_refused():
    f, cls = _clouds(50)
    with pytest.raises(ValueError, match="OOD method 'knn'"):
        fit_reference(f, cls, f, np.zeros((50, 2)), "multilabel", method="knn")
    with pytest.raises(ValueError, match=r"quantile 1\.2"):
        fit_reference(f, cls, f, np.zeros((50, 2)), "multilabel", quantile=1.2)
    with pytest.raises(ValueError, match="training and validation images"):
        fit_reference(f[:1], cls[:1], f, np.zeros((50, 2)), "multilabel")
