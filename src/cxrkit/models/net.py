"""CXRNet: any backbone's feature map -> optional transition conv -> global pooling -> linear.

One head for every model keeps Grad-CAM uniform: ``cam_layer`` is the module whose output is
the last spatial feature map (the transition conv when present, else the backbone). Inputs are
images in [0, 1], (B, 1, H, W); the model normalises them itself (``mean``/``std`` buffers), so
callers, exports and the web service never need to know a model's preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cxrkit.config import INTENSITY

INTENSITY_MODES = INTENSITY  # the one list lives in cxrkit.config


def intensity_op(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-image intensity standardization of (B, 1, H, W) images in [0, 1], before the network's own.

    ``standardize``: zero mean and unit variance per image, mapped to mean 0.5 and sd 0.25 (what
    the network's fixed normalisation expects); ``equalize``: histogram equalization over 256 grey
    levels (each pixel -> the share of the image's pixels at or below its level), which undoes any
    monotone grey-level change (gamma, contrast, brightness) another site's processing makes.
    Both are plain tensor operations, so exports and Grad-CAM see them too.
    """
    if mode == "none":
        return x
    if mode == "standardize":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        sd = x.std(dim=(1, 2, 3), keepdim=True)
        return 0.5 + 0.25 * (x - mean) / (sd + 1e-3)
    if mode == "equalize":
        b = x.shape[0]
        q = (x * 255).round().clamp(0, 255).to(torch.int64).reshape(b, -1)
        hist = torch.zeros(b, 256, dtype=x.dtype, device=x.device).scatter_add(
            1, q, torch.ones_like(x.reshape(b, -1))
        )
        cdf = hist.cumsum(1) / q.shape[1]
        return cdf.gather(1, q).reshape(x.shape)
    raise ValueError(f"intensity {mode!r}: expected one of {', '.join(INTENSITY_MODES)}")


GREY_MODES = ("fold", "repeat")


@dataclass(frozen=True)
class HeadSpec:
    """How a backbone meets the common head, passed whole to every builder.

    ``grey``: with 1-channel input and an RGB stem, ``fold`` sums the stem's kernels over colour,
    ``repeat`` feeds three identical channels (for a grey image both compute the same function).
    ``transition``: channels of a 3x3 conv before pooling (0: none). ``hidden``/``dropout``: the head's
    dense layer and dropout (None: the preset's own, else none).
    """

    grey: str = "fold"
    transition: int = 0
    hidden: int | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        if self.grey not in GREY_MODES:
            raise ValueError(f"grey mode {self.grey!r}: expected fold or repeat")

    def net_kwargs(self) -> dict:
        """The CXRNet arguments: transition, hidden (0: none) and dropout (0: none)."""
        return {"transition": self.transition, "hidden": self.hidden or 0, "dropout": self.dropout or 0.0}


DEFAULT_HEAD = HeadSpec()  # fold the stem, no transition conv, the preset's own dense layer and dropout


class CXRNet(nn.Module):
    """Backbone + CAM-friendly head. ``forward_features`` gives the map, ``forward_head`` the logits."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_labels: int,
        *,
        blocks: Sequence[nn.Module],
        stem: nn.Module | None,
        transition: int = 0,
        hidden: int = 0,
        dropout: float = 0.0,
        mean: float = 0.5,
        std: float = 0.25,
        repeat_rgb: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.transition = (
            nn.Sequential(
                nn.Conv2d(feature_dim, transition, 3, padding=1, bias=False),
                nn.BatchNorm2d(transition),
                nn.ReLU(inplace=True),
            )
            if transition
            else None
        )
        dim = transition or feature_dim
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
            dim = hidden
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dim, num_labels))
        self.head = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)
        self.repeat_rgb = repeat_rgb
        self.intensity = "none"  # per-image standardization (intensity_op), set from the run's input spec
        # plain tuples, not submodules: these are views into the backbone (no duplicate state_dict keys)
        self.blocks: tuple[nn.Module, ...] = tuple(blocks)  # backbone stages, input to output
        self.stems: tuple[nn.Module, ...] = (stem,) if stem is not None else ()
        self.feature_dim = feature_dim
        self.num_labels = num_labels

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is the last spatial feature map (Grad-CAM's target)."""
        return self.transition if self.transition is not None else self.backbone

    @property
    def pooled_dim(self) -> int:
        """Size of the pooled feature vector the head receives."""
        return self.transition[0].out_channels if self.transition is not None else self.feature_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> feature map (B, C, h, w)."""
        x = (intensity_op(x, self.intensity) - self.mean) / self.std
        if self.repeat_rgb:
            x = x.expand(-1, 3, -1, -1)
        f = self.backbone(x)
        return self.transition(f) if self.transition is not None else f

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        """Global average pooling of a feature map: (B, C, h, w) -> (B, C)."""
        return f.mean(dim=(2, 3))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, C) -> logits (B, L)."""
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> logits (B, L)."""
        return self.forward_head(self.pool(self.forward_features(x)))

    def class_weights(self) -> torch.Tensor | None:
        """(L, C) weights of a purely linear head (plain CAM needs them); None when a hidden layer exists."""
        linears = [m for m in self.head if isinstance(m, nn.Linear)]
        return linears[0].weight if len(linears) == 1 else None

    def train(self, mode: bool = True) -> CXRNet:
        """Like nn.Module.train, but BatchNorm layers of frozen stages keep their running statistics."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in m.parameters()
                ):
                    m.eval()
        return self

    def freeze(self, mode: str = "none", last_n: int = 0) -> None:
        """Freeze nothing, the whole backbone, or all but its last ``last_n`` stages."""
        if mode not in ("none", "backbone", "last_n"):
            raise ValueError(f"freeze mode {mode!r}: expected none, backbone or last_n")
        for p in self.backbone.parameters():
            p.requires_grad = mode == "none"
        if mode == "last_n":
            for block in self.blocks[len(self.blocks) - last_n :] if last_n > 0 else []:
                for p in block.parameters():
                    p.requires_grad = True
