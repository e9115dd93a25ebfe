"""Losses: NaN labels masked, weights as defined, focal reduces to BCE at gamma 0."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrkit.training.losses import (
    batch_weighted_bce,
    build_loss,
    focal_loss,
    masked_bce,
    pos_weight_from,
    softmax_ce,
)


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expect = F.binary_cross_entropy_with_logits(logits[[0, 1, 1], [0, 0, 1]], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.isclose(masked_bce(logits, y), expect)
    one = torch.tensor([[float("nan"), 1.0]])  # one known entry: the mean is that entry's loss
    assert torch.isclose(masked_bce(logits[:1], one), F.softplus(torch.tensor(1.0)))
    none = torch.full((2, 2), float("nan"))  # nothing known: zero, not NaN
    assert masked_bce(logits, none) == 0 and focal_loss(logits, none) == 0


def _bce(z: float, y: float) -> float:
    """Binary cross-entropy of sigmoid(z) against y, written out by hand."""
    return math.log1p(math.exp(-z)) if y == 1 else math.log1p(math.exp(z))


def test_batch_weighted_bce_counts_per_label_and_skips_unknowns():
    # label 0: 1 positive, 3 negatives, 1 unknown; label 1: 3 positives, 1 negative, 1 unknown
    nan = float("nan")
    rows = [([0.3, -0.7], [1, 0]), ([1.2, 0.4], [0, nan]), ([-0.5, 2.0], [0, 1]), ([0.1, -1.5], [0, 1])]
    rows.append(([0.8, 0.9], [nan, 1]))
    logits = torch.tensor([r[0] for r in rows])
    y = torch.tensor([r[1] for r in rows], dtype=torch.float32)
    weights = [{1: 4 / 1, 0: 4 / 3}, {1: 4 / 3, 0: 4 / 1}]  # (|P|+|N|)/|P| and (|P|+|N|)/|N| per label
    terms = [
        weights[j][t] * _bce(z, t)
        for zs, ts in rows
        for j, (z, t) in enumerate(zip(zs, ts, strict=True))
        if not math.isnan(t)
    ]
    assert len(terms) == 8
    assert math.isclose(batch_weighted_bce(logits, y).item(), sum(terms) / 8, rel_tol=1e-6)


def test_pos_weight_from_training_prevalence():
    nan = np.nan
    # label 0: 2 positives, 4 negatives, 1 unknown; label 1: never positive; label 2: never negative
    y = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, nan, 1], [0, 0, nan], [0, 0, 1], [nan, 0, 1]])
    assert torch.allclose(pos_weight_from(y), torch.tensor([2.0, 1.0, 1.0]))
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    expect = (2 * _bce(0.3, 1) + _bce(-1.0, 0) + _bce(2.0, 1)) / 3
    assert math.isclose(build_loss("pos_weight_bce", y)(logits, target).item(), expect, rel_tol=1e-6)


def _focal(z: float, y: float, gamma: float, alpha: float | None) -> float:
    """Lin et al.'s FL = -alpha_t (1 - p_t)^gamma log p_t, written out by hand."""
    p = 1 / (1 + math.exp(-z))
    p_t = p if y == 1 else 1 - p
    a_t = 1.0 if alpha is None else (alpha if y == 1 else 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (1.5, None), (0.5, 0.9)])
def test_focal_loss_exact_values(gamma, alpha):
    pairs = [(2.5, 1), (-0.3, 1), (0.8, 0), (-2.0, 0), (0.1, 1)]
    logits = torch.tensor([[z for z, _ in pairs] + [3.0]])
    y = torch.tensor([[t for _, t in pairs] + [float("nan")]])
    expect = sum(_focal(z, t, gamma, alpha) for z, t in pairs) / len(pairs)
    assert math.isclose(focal_loss(logits, y, gamma, alpha).item(), expect, rel_tol=1e-5)
    assert math.isclose(
        build_loss("focal", y.numpy(), gamma=gamma, alpha=alpha)(logits, y).item(), expect, rel_tol=1e-5
    )


def test_focal_defaults_are_lin_et_al_and_gamma0_is_bce():
    logits, y = torch.tensor([[4.0, -0.2, 0.7]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.isclose(focal_loss(logits, y, gamma=0.0), masked_bce(logits, y))
    expect = sum(_focal(z, t, 2.0, None) for z, t in ((4.0, 1), (-0.2, 1), (0.7, 0))) / 3
    assert math.isclose(focal_loss(logits, y).item(), expect, rel_tol=1e-5)  # gamma 2, no alpha
    assert math.isclose(build_loss("focal", y.numpy())(logits, y).item(), expect, rel_tol=1e-5)


def test_softmax_ce_on_one_hot_skips_unknown_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan"), float("nan")]])
    assert torch.isclose(softmax_ce(logits, y), F.cross_entropy(logits[:2], torch.tensor([0, 1])))
    unknown = logits.clone().requires_grad_(True)
    loss = softmax_ce(unknown, torch.full((3, 2), float("nan")))  # a batch without a known row
    loss.backward()
    assert loss.item() == 0 and unknown.grad is not None and (unknown.grad == 0).all()


def test_every_named_loss_builds_and_is_finite():
    y = torch.tensor([[1.0, 0.0], [0.0, float("nan")]])
    for name in ("bce", "weighted_bce", "pos_weight_bce", "focal", "ce"):
        assert torch.isfinite(build_loss(name, y.numpy())(torch.randn(2, 2), y))


def test_one_positive_or_one_negative_still_weighs_and_one_known_focal_entry_is_its_loss():
    # label 0: one positive, three negatives -> 3; label 1: three positives, one negative -> 1/3
    y = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], dtype=float)
    assert torch.allclose(pos_weight_from(y), torch.tensor([3.0, 1 / 3]))
    one = torch.tensor([[1.0, float("nan")]])
    assert math.isclose(
        focal_loss(torch.tensor([[-0.4, 2.0]]), one).item(), _focal(-0.4, 1, 2.0, None), rel_tol=1e-5
    )
