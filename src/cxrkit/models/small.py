"""Small CNNs from the ChestX-ray14/ChestMNIST literature: 2-3 conv blocks, dropout or batch-norm.

Plus one 4-block net: three 3x3 convolutions with pooling see only ~15 px, too little for
findings defined by their surroundings (an effusion above the diaphragm, a heart too wide);
a fourth pooled block doubles that at about the same cost.

A block is conv3x3 -> [BN] -> ReLU -> max-pool(2) -> [dropout]; the last block skips pooling so
Grad-CAM keeps twice the resolution. The literature's dense layer becomes the head's hidden
layer after global pooling (``hidden``), so every preset keeps the CAM-friendly head.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cxrkit.models.net import DEFAULT_HEAD, CXRNet, HeadSpec
from cxrkit.models.registry import register_model


def build_small_cnn(
    filters: Sequence[int],
    num_labels: int,
    *,
    in_chans: int = 1,
    bn: bool = False,
    block_dropout: float = 0.0,
    hidden: int = 128,
    dropout: float = 0.0,
    transition: int = 0,
    convs: int = 1,
) -> CXRNet:
    """A conv net with one block per entry of ``filters``; ``convs`` 3x3 convolutions per block."""
    blocks: list[nn.Module] = []
    c_in = in_chans
    for k, c in enumerate(filters):
        layers: list[nn.Module] = []
        for j in range(convs):
            layers.append(nn.Conv2d(c_in if j == 0 else c, c, 3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU(inplace=True))
        if k < len(filters) - 1:
            layers.append(nn.MaxPool2d(2))
        if block_dropout:
            layers.append(nn.Dropout(block_dropout))
        blocks.append(nn.Sequential(*layers))
        c_in = c
    backbone = nn.Sequential(*blocks)
    return CXRNet(
        backbone,
        filters[-1],
        num_labels,
        blocks=blocks,
        stem=blocks[0][0],
        transition=transition,
        hidden=hidden,
        dropout=dropout,
    )


def _preset(
    name: str,
    filters: tuple[int, ...],
    bn: bool,
    block_dropout: float,
    hidden: int,
    dropout: float,
    description: str,
) -> None:
    @register_model(name, "small", description)
    def build(
        num_labels: int,
        in_chans: int = 1,
        pretrained: bool = False,
        head: HeadSpec = DEFAULT_HEAD,
    ) -> CXRNet:
        return build_small_cnn(
            filters,
            num_labels,
            in_chans=in_chans,
            bn=bn,
            block_dropout=block_dropout,
            hidden=hidden if head.hidden is None else head.hidden,
            dropout=dropout if head.dropout is None else head.dropout,
            transition=head.transition,
        )


for _f in ((32, 64, 128), (128, 256, 512), (64, 128), (256, 512)):
    _tag = "_".join(map(str, _f))
    _n = len(_f)
    _preset(f"cnn{_n}_{_tag}", _f, False, 0.25, 128, 0.5, f"{_n}-block CNN {_tag}, dropout, dense 128")
    _preset(f"cnn{_n}_{_tag}_bn", _f, True, 0.0, 128, 0.0, f"{_n}-block CNN {_tag}, batch-norm, dense 128")
_preset(
    "cnn4_32_64_128_256_bn",
    (32, 64, 128, 256),
    True,
    0.0,
    128,
    0.0,
    "4-block CNN 32-64-128-256, batch-norm, dense 128: receptive field of ~half a lung at 64 px",
)
_preset(
    "chestmnist_cnn",
    (32, 64, 128),
    False,
    0.2,
    128,
    0.4,
    "3-block ChestMNIST net: 32/64/128 filters, 0.2 dropout, dense 128, 0.4 dropout",
)
