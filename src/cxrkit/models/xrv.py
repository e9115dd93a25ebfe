"""torchxrayvision's chest-X-ray-pretrained networks as ``xrv:<weights>`` under the common head.

``xrv:densenet121-res224-all`` (or ``-nih``, ``-pc``, ``-chex``, ``-rsna``, ``-mimic_nb``,
``-mimic_ch``) is torchxrayvision's DenseNet-121 trained on those chest X-ray sets;
``xrv:resnet50-res512-all`` its ResNet-50. Their weights expect one channel scaled to
[-1024, 1024] (``xrv.datasets.normalize``) at 224 px (512 px for the ResNet): cxrkit's [0, 1]
images map onto that exactly through the model's own ``mean``/``std`` (x * 2048 - 1024), so
every other path (prediction, export, the service) stays unchanged. The weights file is read
from torchxrayvision's cache (``~/.torchxrayvision/models_data``); if it is missing it is
downloaded with a timeout, and offline the error names the file and the folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cxrkit.models.net import DEFAULT_HEAD, CXRNet, HeadSpec
from cxrkit.models.weights import download_weights

XRV_RANGE = 1024.0  # torchxrayvision images lie in [-1024, 1024]


def _xrv():
    import torchxrayvision as xrv

    return xrv


def xrv_weight_names() -> list[str]:
    """The torchxrayvision weight names cxrkit builds (DenseNet-121 and ResNet-50 classifiers)."""
    return [k for k in _xrv().models.model_urls if k.startswith(("densenet121", "resnet50"))]


def xrv_weights_path(weights: str) -> Path:
    """Where torchxrayvision keeps (and cxrkit looks for) the file of ``weights``."""
    url = _xrv().models.model_urls[weights]["weights_url"]
    return Path(_xrv().utils.get_cache_dir()).expanduser() / url.rsplit("/", 1)[-1]


def xrv_labels(weights: str) -> list[str]:
    """The outputs of the published classifier ("" where that training set had no such label)."""
    return list(_xrv().models.model_urls[weights]["labels"])


def build_xrv(
    weights: str,
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    head: HeadSpec = DEFAULT_HEAD,
    *,
    timeout: float = 30.0,
) -> CXRNet:
    """torchxrayvision's network (its published weights when ``pretrained``) under cxrkit's head."""
    if weights not in xrv_weight_names():
        raise ValueError(
            f"unknown torchxrayvision weights {weights!r}; known: {', '.join(xrv_weight_names())}"
        )
    if in_chans != 1:
        raise ValueError(f"xrv:{weights} takes grey (1-channel) images, not {in_chans} channels")
    xrv = _xrv()
    resnet = weights.startswith("resnet")
    if pretrained:
        path = xrv_weights_path(weights)
        if not path.exists():
            download_weights(xrv.models.model_urls[weights]["weights_url"], path, timeout)
        # torchxrayvision reads its own published file (a pickled module for the DenseNets)
        net = (xrv.models.ResNet if resnet else xrv.models.DenseNet)(
            weights=weights, cache_dir=str(path.parent)
        )
    else:
        net = _resnet_shell(len(xrv_labels(weights))) if resnet else xrv.models.DenseNet()
    if resnet:
        r = net.model
        stages = [r.layer1, r.layer2, r.layer3, r.layer4]
        backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, *stages)
        stem, classifier = r.conv1, r.fc
    else:
        stages = [
            m for name, m in net.features.named_children() if re.match(r"denseblock|transition|norm5", name)
        ]
        backbone = nn.Sequential(net.features, nn.ReLU())  # features2: ReLU, then pooling
        stem, classifier = net.features.conv0, net.classifier
    model = CXRNet(
        backbone,
        classifier.in_features,
        num_labels,
        blocks=stages,
        stem=stem,
        **head.net_kwargs(),
        mean=0.5,
        std=0.5 / XRV_RANGE,  # (x - 0.5) / (1 / 2048) = 2048 x - 1024
    )
    if pretrained:
        model.pretrained_head = (xrv_labels(weights), classifier.weight.detach(), classifier.bias.detach())
    return model


def _resnet_shell(num_classes: int) -> nn.Module:
    """torchxrayvision's ResNet-50 layout (one input channel) with random weights."""
    import torchvision

    class Shell(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = torchvision.models.resnet50(num_classes=num_classes, weights=None)
            self.model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)

    return Shell()


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def init_head_from_pretrained(model: CXRNet, labels: Sequence[str]) -> list[str]:
    """Copy the published classifier's row of every label whose name matches; the matched names.

    Needs a plain linear head on the pooled features (no ``hidden`` layer, no ``transition``).
    """
    published = getattr(model, "pretrained_head", None)
    if published is None:
        raise ValueError("init_head: from_pretrained needs a pretrained xrv: model (pretrained: true)")
    weight = model.class_weights()
    if weight is None or model.transition is not None:
        raise ValueError(
            "init_head: from_pretrained needs a linear head on pooled features (hidden: 0, transition: 0)"
        )
    names, w, b = published
    rows = {_key(n): k for k, n in enumerate(names) if n}
    head = next(m for m in model.head if isinstance(m, nn.Linear))
    matched = []
    with torch.no_grad():
        for j, label in enumerate(labels):
            k = rows.get(_key(label))
            if k is not None:
                head.weight[j] = w[k]
                head.bias[j] = b[k]
                matched.append(label)
    return matched
