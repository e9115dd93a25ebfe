"""Model registry: ``create_model(name, num_labels, in_chans=1, pretrained=...)`` for every model.

Builders register themselves by name (small CNN presets, torchvision backbones); any timm model
is reachable as ``timm:<name>``, torchxrayvision's chest-X-ray networks as ``xrv:<weights>`` and
Rad-DINO as ``rad-dino``. Every model is a ``CXRNet`` with the same CAM-friendly head.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from cxrkit.models.net import CXRNet, HeadSpec
from cxrkit.models.weights import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD

Builder = Callable[..., CXRNet]
RAD_DINO = "rad-dino"
# name prefix -> "module:builder" of a family whose every model is reachable by name (imported on use)
FAMILY_PREFIXES = {
    "timm:": "cxrkit.models.timm_adapter:build_timm",
    "xrv:": "cxrkit.models.xrv:build_xrv",
}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder, family and whether ImageNet weights exist for it."""

    name: str
    family: str
    description: str
    builder: Builder
    has_pretrained: bool


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, family: str, description: str, has_pretrained: bool = False):
    """Decorator registering ``builder(num_labels, in_chans, pretrained, **head) -> CXRNet``."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, family, description, builder, has_pretrained)
        return builder

    return wrap


def _load_builders() -> None:
    # importing the modules runs their @register_model decorators
    from cxrkit.models import small, tv  # noqa: F401


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (``timm:<name>`` models are not listed: any timm name works)."""
    _load_builders()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; a clear error with suggestions for unknown names."""
    _load_builders()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} Known: {', '.join(_REGISTRY)}, "
            f"timm:<name>, xrv:<weights>, {RAD_DINO}"
        )
    return _REGISTRY[name]


def create_model(
    name: str,
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    *,
    grey: str = "fold",
    transition: int = 0,
    hidden: int | None = None,
    dropout: float | None = None,
    backbone_config: dict | None = None,
) -> CXRNet:
    """Build ``name`` with ``num_labels`` outputs for ``in_chans``-channel input in [0, 1].

    ``grey``: with 1-channel input and an RGB stem, ``fold`` sums the stem's kernels over colour
    (ImageNet weights kept), ``repeat`` feeds the grey image as three identical channels.
    ``hidden``/``dropout`` override the preset's head; ``transition`` adds a 3x3 conv before pooling.
    ``backbone_config``: the encoder layout a saved run stored (Rad-DINO), so no download is needed.
    """
    head = HeadSpec(grey, transition, hidden, dropout)  # checks the grey mode
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans {in_chans}: expected 1 (grey) or 3")
    if name == RAD_DINO:
        from cxrkit.models.raddino import build_rad_dino

        return build_rad_dino(num_labels, in_chans, pretrained, head, backbone_config=backbone_config)
    for prefix, module in FAMILY_PREFIXES.items():
        if name.startswith(prefix):
            family, builder = module.rsplit(":", 1)
            build = getattr(importlib.import_module(family), builder)
            return build(name[len(prefix) :], num_labels, in_chans, pretrained, head)
    info = model_info(name)
    if pretrained and not info.has_pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; use pretrained: false")
    return info.builder(num_labels=num_labels, in_chans=in_chans, pretrained=pretrained, head=head)


def pretrained_normalisation(name: str) -> tuple[float, float] | None:
    """(mean, std) a model trained from ``name``'s pretrained weights normalises its input by.

    For runs saved before the normalisation was stored with them; None where it cannot be known.
    """
    if name.startswith("timm:"):
        import timm

        cfg = timm.models.get_pretrained_cfg(name[5:], allow_unregistered=True)
        if cfg is None:
            return None
        return float(sum(cfg.mean) / len(cfg.mean)), float(sum(cfg.std) / len(cfg.std))
    if name.startswith("xrv:") or name == RAD_DINO or name not in list_models():
        return None
    return (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD) if model_info(name).has_pretrained else None
