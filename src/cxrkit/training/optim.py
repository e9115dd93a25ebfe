"""The optimiser and the per-epoch learning-rate schedule a TrainConfig asks for."""

from __future__ import annotations

import math

import torch

from cxrkit.config import TrainConfig
from cxrkit.training.stopping import MINIMISE


def build_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with momentum."""
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True
        )
    raise ValueError(f"train.optimizer {t.optimizer!r}: expected adam, adamw or sgd")


def build_scheduler(opt: torch.optim.Optimizer, t: TrainConfig):
    """Per-epoch schedule: none, exponential decay, cosine with warm-up, or reduce-on-plateau."""
    if t.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode="min" if t.monitor in MINIMISE else "max",
            factor=t.plateau_factor,
            patience=t.plateau_patience,
        )
    if t.schedule not in ("none", "exponential", "cosine"):
        raise ValueError(f"train.schedule {t.schedule!r}: expected none, exponential, cosine or plateau")

    def factor(epoch: int) -> float:
        warm = min(1.0, (epoch + 1) / t.warmup_epochs) if t.warmup_epochs else 1.0
        if t.schedule == "exponential":
            return warm * 0.1 ** (epoch / t.decay_epochs)
        if t.schedule == "cosine":
            span = max(1, t.epochs - t.warmup_epochs)
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, epoch - t.warmup_epochs) / span)))
        return warm

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
