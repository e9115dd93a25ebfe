"""torchvision backbones under the common head, with ImageNet weights folded to one channel.

Each entry says how to cut the classifier off (``features``), the feature width, the stem conv
to fold, and the stages used for "unfreeze the last N blocks".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cxrkit.models.net import DEFAULT_HEAD, CXRNet, HeadSpec
from cxrkit.models.registry import register_model
from cxrkit.models.weights import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, load_torchvision_state


@dataclass(frozen=True)
class TVSpec:
    """How to adapt one torchvision model."""

    features: Callable[[nn.Module], nn.Sequential]
    dim: int
    stem: Callable[[nn.Module], nn.Conv2d]


def _resnet(m) -> nn.Sequential:
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)


def _googlenet(m) -> nn.Sequential:
    names = [
        "conv1",
        "maxpool1",
        "conv2",
        "conv3",
        "maxpool2",
        "inception3a",
        "inception3b",
        "maxpool3",
        "inception4a",
        "inception4b",
        "inception4c",
        "inception4d",
        "inception4e",
        "maxpool4",
        "inception5a",
        "inception5b",
    ]
    return nn.Sequential(*[getattr(m, n) for n in names])


SPECS: dict[str, TVSpec] = {
    "densenet121": TVSpec(
        lambda m: nn.Sequential(*m.features, nn.ReLU(inplace=True)), 1024, lambda m: m.features.conv0
    ),
    "resnet18": TVSpec(_resnet, 512, lambda m: m.conv1),
    "resnet50": TVSpec(_resnet, 2048, lambda m: m.conv1),
    "mobilenet_v2": TVSpec(lambda m: m.features, 1280, lambda m: m.features[0][0]),
    "mobilenet_v3_small": TVSpec(lambda m: m.features, 576, lambda m: m.features[0][0]),
    "mobilenet_v3_large": TVSpec(lambda m: m.features, 960, lambda m: m.features[0][0]),
    "vgg16": TVSpec(lambda m: m.features, 512, lambda m: m.features[0]),
    "alexnet": TVSpec(lambda m: m.features, 256, lambda m: m.features[0]),
    "googlenet": TVSpec(_googlenet, 1024, lambda m: m.conv1.conv),
    "efficientnet_b0": TVSpec(lambda m: m.features, 1280, lambda m: m.features[0][0]),
}


def fold_stem(conv: nn.Conv2d) -> None:
    """Make an RGB stem conv take one channel by summing its kernels over colour (in place)."""
    if conv.in_channels == 3:
        conv.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True))
        conv.in_channels = 1


def build_torchvision(
    name: str,
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    head: HeadSpec = DEFAULT_HEAD,
) -> CXRNet:
    """A torchvision model's feature extractor under the common head."""
    from torchvision import models as tvm

    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    if name == "googlenet":
        kwargs["transform_input"] = False
    model = tvm.get_model(name, weights=None, **kwargs)
    if pretrained:
        state = load_torchvision_state(name)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux")}, strict=False)
    spec = SPECS[name]
    features = spec.features(model)
    stem = spec.stem(model)
    repeat = in_chans == 1 and head.grey == "repeat"
    if in_chans == 1 and head.grey == "fold":
        fold_stem(stem)
    stages = [b for b in features if any(True for _ in b.parameters())]
    mean, std = (IMAGENET_GREY_MEAN, IMAGENET_GREY_STD) if pretrained else (0.5, 0.25)
    return CXRNet(
        features,
        spec.dim,
        num_labels,
        blocks=stages,
        stem=stem,
        **head.net_kwargs(),
        mean=mean,
        std=std,
        repeat_rgb=repeat,
    )


def _register(name: str) -> None:
    @register_model(name, "torchvision", f"torchvision {name}", has_pretrained=True)
    def build(**kw) -> CXRNet:
        return build_torchvision(name, **kw)


for _name in SPECS:
    _register(_name)
