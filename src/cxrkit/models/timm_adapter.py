"""Any timm model as ``timm:<name>``: timm folds pretrained RGB stems to ``in_chans`` itself.

Every family ends in a (B, C, h, w) map for the common head and Grad-CAM: CNNs give one already;
transformers that give tokens (ViT, DeiT, BEiT, EVA: (B, N, C) with class/register tokens first)
have those prefix tokens dropped and the patch tokens put back on their grid; channels-last maps
(Swin) are permuted. Grad-CAM on a transformer therefore explains the last block's patch tokens.
Where timm allows it (ViT, DeiT, EVA, Swin) the model takes any input size that is a multiple
of its patch size (``dynamic_img_size``); BEiT keeps its native size.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrkit.models.net import DEFAULT_HEAD, CXRNet, HeadSpec
from cxrkit.models.weights import PretrainedWeightsError


def build_timm(
    name: str,
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    head: HeadSpec = DEFAULT_HEAD,
) -> CXRNet:
    """timm's ``forward_features`` under the common head."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs timm: pip install timm") from None
    if name not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    repeat = in_chans == 1 and head.grey == "repeat"
    try:
        model = _create(
            timm,
            name,
            pretrained=pretrained,
            num_classes=0,
            global_pool="",
            in_chans=3 if repeat else in_chans,
        )
    except Exception as err:  # hub/network errors come in many types
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"cannot load pretrained weights for timm:{name} ({type(err).__name__}: {err}). With internet "
            "they are fetched from the Hugging Face hub into ~/.cache/huggingface; or use pretrained: false"
        ) from None

    cfg = model.pretrained_cfg
    stem_name = cfg.get("first_conv") or ""
    stem = model.get_submodule(stem_name) if stem_name else None
    if isinstance(stem, nn.Module) and not isinstance(stem, nn.Conv2d):
        stem = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    mean = float(sum(cfg.get("mean", (0.5,))) / len(cfg.get("mean", (0.5,)))) if pretrained else 0.5
    std = float(sum(cfg.get("std", (0.25,))) / len(cfg.get("std", (0.25,)))) if pretrained else 0.25
    tokens = hasattr(model, "num_prefix_tokens")  # ViT-like: a flat list of blocks, one stage each
    stages = []
    for child_name, child in model.named_children():
        if any(True for _ in child.parameters()):
            stages.extend(child.children() if tokens and child_name == "blocks" else [child])
    return CXRNet(
        TimmFeatures(model),
        model.num_features,
        num_labels,
        blocks=stages,
        stem=stem,
        **head.net_kwargs(),
        mean=mean,
        std=std,
        repeat_rgb=repeat,
    )


def _create(timm, name: str, **kwargs) -> nn.Module:
    """``timm.create_model`` with any input size where the family supports it."""
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
        return timm.create_model(name, **kwargs)


class TimmFeatures(nn.Module):
    """A timm model's ``forward_features`` as a (B, C, h, w) map, whatever layout the family uses."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m
        self.prefix = int(getattr(m, "num_prefix_tokens", 0))  # class, register, distillation tokens
        self.nhwc = getattr(m, "output_fmt", "NCHW") == "NHWC"

    def grid(self, x: torch.Tensor, n: int) -> tuple[int, int]:
        """The patch grid (rows, columns) of ``n`` patch tokens for input ``x``."""
        pe = self.m.patch_embed
        ph, pw = pe.patch_size
        h, w = x.shape[-2] // ph, x.shape[-1] // pw
        if h * w != n:
            h, w = pe.grid_size
        if h * w != n:
            raise ValueError(f"{n} patch tokens do not fit a {h}x{w} grid for a {tuple(x.shape[-2:])} input")
        return int(h), int(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, h, w)."""
        f = self.m.forward_features(x)
        if f.ndim == 3:
            f = f[:, self.prefix :]
            h, w = self.grid(x, f.shape[1])
            return f.transpose(1, 2).reshape(f.shape[0], f.shape[2], h, w)
        return f.permute(0, 3, 1, 2) if self.nhwc else f
