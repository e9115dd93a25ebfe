"""Any timm model as ``timm:<name>``: timm folds pretrained RGB stems to ``in_chans`` itself."""

from __future__ import annotations

from torch import nn

from cxrkit.models.net import CXRNet
from cxrkit.models.weights import PretrainedWeightsError


def build_timm(
    name: str,
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    *,
    grey: str = "fold",
    transition: int = 0,
    hidden: int | None = None,
    dropout: float | None = None,
) -> CXRNet:
    """timm's ``forward_features`` under the common head."""
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs timm: pip install timm") from None
    if name not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    repeat = in_chans == 1 and grey == "repeat"
    try:
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, global_pool="", in_chans=3 if repeat else in_chans
        )
    except Exception as err:  # hub/network errors come in many types
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"cannot load pretrained weights for timm:{name} ({type(err).__name__}: {err}). With internet "
            "they are fetched from the Hugging Face hub into ~/.cache/huggingface; or use pretrained: false"
        ) from None

    class Features(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_features(x)

    cfg = model.pretrained_cfg
    stem_name = cfg.get("first_conv") or ""
    stem = model.get_submodule(stem_name) if stem_name else None
    if isinstance(stem, nn.Module) and not isinstance(stem, nn.Conv2d):
        stem = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    mean = float(sum(cfg.get("mean", (0.5,))) / len(cfg.get("mean", (0.5,)))) if pretrained else 0.5
    std = float(sum(cfg.get("std", (0.25,))) / len(cfg.get("std", (0.25,)))) if pretrained else 0.25
    stages = [c for c in model.children() if any(True for _ in c.parameters())]
    return CXRNet(
        Features(model),
        model.num_features,
        num_labels,
        blocks=stages,
        stem=stem,
        transition=transition,
        hidden=hidden or 0,
        dropout=dropout or 0.0,
        mean=mean,
        std=std,
        repeat_rgb=repeat,
    )
