"""X-ray-safe augmentation on a whole batch: small rotation, shift and zoom; flips only by option.

Left-right flips put the heart on the wrong side (and move lateralised findings), so they are off
unless asked for. Every random draw comes from the caller's generator, so an epoch is repeatable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    rotate: float = 5.0,
    shift: float = 0.05,
    scale: float = 0.05,
    hflip: bool = False,
) -> torch.Tensor:
    """Random affine per image of (B, 1, H, W); uncovered borders repeat the edge pixels.

    Zero fill would cut black bands into anatomy that reaches the image edge (the abdomen at the
    bottom of a chest film): an artificial edge that un-augmented images never show, which
    skews batch-norm statistics between training and evaluation.
    """
    b = x.shape[0]
    if not (rotate or shift or scale or hflip):
        return x
    u = torch.rand(b, 5, generator=gen) * 2 - 1  # uniform in [-1, 1]
    ang = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    flip = torch.where(u[:, 4] > 0, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / s * flip
    theta[:, 0, 1] = -torch.sin(ang) / s
    theta[:, 1, 0] = torch.sin(ang) / s * flip
    theta[:, 1, 1] = torch.cos(ang) / s
    theta[:, 0, 2] = u[:, 2] * shift * 2  # grid units span [-1, 1]
    theta[:, 1, 2] = u[:, 3] * shift * 2
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
