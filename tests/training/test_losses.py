"""Losses: NaN labels masked, weights as defined, focal reduces to BCE at gamma 0."""

import numpy as np
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


def test_batch_weighted_bce_uses_wang_weights():
    logits = torch.zeros(4, 1)
    y = torch.tensor([[1.0], [0.0], [0.0], [0.0]])  # |P|=1, |N|=3
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none").squeeze()
    expect = (4 / 1 * per[0] + 4 / 3 * per[1:].sum()) / 4
    assert torch.isclose(batch_weighted_bce(logits, y), expect)


def test_pos_weight_from_training_prevalence():
    y = np.array([[1, 0], [0, 0], [0, np.nan], [0, 1]], dtype=np.float32)
    assert torch.allclose(pos_weight_from(y), torch.tensor([3.0, 2.0]))


def test_focal_gamma0_is_bce_and_downweights_easy_examples():
    logits, y = torch.tensor([[4.0, -0.2]]), torch.tensor([[1.0, 1.0]])
    assert torch.isclose(focal_loss(logits, y, gamma=0.0), masked_bce(logits, y))
    easy = focal_loss(torch.tensor([[4.0]]), torch.tensor([[1.0]]))
    hard = focal_loss(torch.tensor([[-0.2]]), torch.tensor([[1.0]]))
    assert easy / hard < masked_bce(torch.tensor([[4.0]]), torch.tensor([[1.0]])) / masked_bce(
        torch.tensor([[-0.2]]), torch.tensor([[1.0]])
    )


def test_softmax_ce_on_one_hot_skips_unknown_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan"), float("nan")]])
    assert torch.isclose(softmax_ce(logits, y), F.cross_entropy(logits[:2], torch.tensor([0, 1])))


def test_every_named_loss_builds_and_is_finite():
    y = torch.tensor([[1.0, 0.0], [0.0, float("nan")]])
    for name in ("bce", "weighted_bce", "pos_weight_bce", "focal", "ce"):
        assert torch.isfinite(build_loss(name, y.numpy())(torch.randn(2, 2), y))
