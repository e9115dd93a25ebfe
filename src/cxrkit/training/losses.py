"""Losses that cope with class imbalance; every one masks unknown (NaN) labels.

- ``bce``: plain binary cross-entropy over the known labels.
- ``weighted_bce``: Wang et al. (2017) per-batch weights w_P = (|P|+|N|)/|P| on positives and
  w_N = (|P|+|N|)/|N| on negatives, per label, counted in the batch.
- ``pos_weight_bce``: positives weighted by N_neg / N_pos of the training set, per label.
- ``focal``: Lin et al. (2017), (1 - p_t)^gamma down-weights easy examples; optional alpha.
- ``ce``: softmax cross-entropy for single-label sets (one-hot targets, e.g. NORMAL/PNEUMONIA).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = ("bce", "weighted_bce", "pos_weight_bce", "focal", "ce")


def _mask(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    known = ~torch.isnan(y)
    return torch.where(known, y, torch.zeros_like(y)), known.float()


def masked_bce(
    logits: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean BCE over known entries; ``weight`` per entry, ``pos_weight`` per label."""
    y0, known = _mask(y)
    loss = F.binary_cross_entropy_with_logits(logits, y0, reduction="none", pos_weight=pos_weight)
    w = known if weight is None else known * weight
    return (loss * w).sum() / known.sum().clamp(min=1.0)


def batch_weighted_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wang et al.'s W-CEL: per label, positives weighted (|P|+|N|)/|P|, negatives (|P|+|N|)/|N|."""
    y0, known = _mask(y)
    pos = (y0 * known).sum(0)
    neg = ((1 - y0) * known).sum(0)
    total = pos + neg
    w_p, w_n = total / pos.clamp(min=1), total / neg.clamp(min=1)  # a class absent from the batch: unused
    return masked_bce(logits, y, weight=y0 * w_p + (1 - y0) * w_n)


def focal_loss(
    logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Binary focal loss over known entries."""
    y0, known = _mask(y)
    ce = F.binary_cross_entropy_with_logits(logits, y0, reduction="none")
    p_t = torch.exp(-ce)
    loss = (1 - p_t) ** gamma * ce
    if alpha is not None:
        loss = loss * (alpha * y0 + (1 - alpha) * (1 - y0))
    return (loss * known).sum() / known.sum().clamp(min=1.0)


def softmax_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against one-hot targets; rows with unknown labels are skipped."""
    rows = ~torch.isnan(y).any(1)
    if not rows.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[rows], y[rows].argmax(1))


def pos_weight_from(train_targets: np.ndarray) -> torch.Tensor:
    """N_neg / N_pos per label from the training targets (NaN ignored; 1 where a class is absent)."""
    y = np.asarray(train_targets, dtype=np.float64)
    pos = np.nansum(y, axis=0)  # targets are 0/1
    neg = np.sum(~np.isnan(y), axis=0) - pos
    ratio = np.divide(neg, pos, out=np.ones_like(pos), where=(pos > 0) & (neg > 0))
    return torch.tensor(ratio, dtype=torch.float32)


def build_loss(
    name: str, train_targets: np.ndarray, *, gamma: float = 2.0, alpha: float | None = None
) -> LossFn:
    """The loss function ``name`` (see module docstring); ``train_targets`` feed pos_weight_bce."""
    if name == "bce":
        return masked_bce
    if name == "weighted_bce":
        return batch_weighted_bce
    if name == "pos_weight_bce":
        pw = pos_weight_from(train_targets)
        return lambda logits, y: masked_bce(logits, y, pos_weight=pw.to(logits.device))
    if name == "focal":
        return lambda logits, y: focal_loss(logits, y, gamma, alpha)
    if name == "ce":
        return softmax_ce
    raise ValueError(f"loss {name!r}: expected one of {', '.join(LOSSES)}")
