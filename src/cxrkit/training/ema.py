"""Weight averaging: an exponential moving average (EMA) of a network's weights during training.

The average of the weights along the last stretch of training sits in a flatter part of the loss
than the last step's weights, which tends to generalise better to images unlike the training
set (Polyak averaging; Izmailov et al. 2018 for SWA). Batch-norm running statistics are averaged
too, so the averaged network is evaluated as it is, with no extra pass over the data. Early in
training the decay ramps up ((1 + n) / (10 + n) after n updates) so the average is not dominated
by the random start.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``model``'s EMA with ``decay`` per optimiser step; ``state``/``ckpt`` carry it across a resume."""

    def __init__(self, model: nn.Module, decay: float, ckpt: dict | None = None) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: expected a value in (0, 1)")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0
        if ckpt is not None:
            self.model.load_state_dict(ckpt["weights"])
            self.updates = int(ckpt["updates"])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (integer buffers are copied)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for name, avg in self.model.state_dict().items():
            new = live[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(new.to(avg.device), alpha=1 - d)
            else:
                avg.copy_(new)

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run continues the same average."""
        return {
            "weights": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "updates": self.updates,
        }
