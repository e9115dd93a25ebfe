"""Every timm family under the common head: forward, backward, freezing and Grad-CAM at native size.

Transformers give tokens (ViT, DeiT, EVA, BEiT) or channels-last maps (Swin); the adapter turns
both into the (B, C, h, w) map the head pools and Grad-CAM explains.
"""

import pytest
import torch

from cxrkit.explain.gradcam import compute_heatmaps
from cxrkit.models import create_model
from cxrkit.models.timm_adapter import TimmFeatures

timm = pytest.importorskip("timm")

# family: (smallest timm model of the family, its native input size)
FAMILIES = {
    "ViT": ("vit_tiny_patch16_224", 224),
    "DeiT": ("deit_tiny_patch16_224", 224),
    "EVA": ("eva02_tiny_patch14_224", 224),
    "Swin": ("swin_tiny_patch4_window7_224", 224),
    "ConvNeXt": ("convnext_atto", 224),
    "EfficientNet": ("efficientnet_b0", 224),
    "RegNet": ("regnetx_002", 224),
    "MaxViT": ("maxvit_pico_rw_256", 256),
    "Xception": ("legacy_xception", 299),
    "Inception": ("inception_v3", 299),
    "DenseNet": ("densenet121", 224),
    "ResNet": ("resnet10t", 224),
}


def _point_head_at_the_features(model, x: torch.Tensor) -> None:
    """Random weights give maps of any sign; head rows along the mean pooled feature make them positive."""
    with torch.no_grad():
        direction = model.eval().pool(model.forward_features(x)).mean(0)
        model.class_weights()[:] = direction
    model.train()


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_freezes_and_explains_at_native_size(family):
    name, size = FAMILIES[family]
    torch.manual_seed(0)
    model = create_model(f"timm:{name}", 3, 1, False, hidden=0)
    x = torch.rand(2, 1, size, size)
    f = model.train().forward_features(x)
    assert f.ndim == 4 and f.shape[:2] == (2, model.feature_dim) and f.shape[2] * f.shape[3] > 1
    logits = model(x)
    assert logits.shape == (2, 3)
    target = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert model.stems[0].weight.grad.abs().sum() > 0  # gradients reach the first convolution
    _point_head_at_the_features(model, x)
    heat = compute_heatmaps(model, x, [0, 2])
    assert heat.shape == (2, size, size) and heat.min() >= 0 and heat.max() <= 1
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(2))
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    model.freeze("last_n", 1)
    trainable = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.blocks[-1].parameters()}


def _tiny_vit(**kw):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0, global_pool="", **kw
    )


@pytest.mark.parametrize(
    ("kw", "prefix"),
    [
        ({}, 1),
        ({"reg_tokens": 4}, 5),
        ({"class_token": False, "reg_tokens": 2}, 2),
        ({"class_token": False}, 0),
    ],
)
def test_tokens_go_back_to_their_patch_grid_without_class_or_register_tokens(kw, prefix):
    vit = _tiny_vit(**kw).eval()
    x = torch.rand(2, 3, 64, 64)
    tokens = vit.forward_features(x)
    assert tokens.shape == (2, prefix + 16, 32)
    grid = TimmFeatures(vit)(x)
    assert grid.shape == (2, 32, 4, 4)
    for r, c in ((0, 0), (1, 3), (3, 2)):  # patch (r, c) is token prefix + 4 r + c
        assert torch.equal(grid[:, :, r, c], tokens[:, prefix + 4 * r + c])


def test_channels_last_maps_are_permuted_and_any_multiple_of_the_patch_size_works():
    torch.manual_seed(0)
    vit = create_model("timm:vit_tiny_patch16_224", 2, 1, False).eval()
    assert vit(torch.rand(1, 1, 96, 128)).shape == (1, 2)  # dynamic size: 6 x 8 patches
    assert vit.forward_features(torch.rand(1, 1, 96, 128)).shape[2:] == (6, 8)
    swin = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, global_pool="").eval()
    x = torch.rand(1, 3, 224, 224)
    nhwc = swin.forward_features(x)
    assert torch.equal(TimmFeatures(swin)(x), nhwc.permute(0, 3, 1, 2))


def test_a_transition_conv_and_grey_repeat_work_on_tokens():
    torch.manual_seed(0)
    model = create_model("timm:deit_tiny_patch16_224", 2, 1, False, transition=16, grey="repeat")
    x = torch.rand(2, 1, 224, 224)
    assert model.forward_features(x).shape == (2, 16, 14, 14) and model.cam_layer is model.transition
    heat = compute_heatmaps(model.eval(), x, 1)
    assert heat.shape == (2, 224, 224) and heat.min() >= 0 and heat.max() <= 1


def test_beit_tokens_keep_their_fixed_grid():
    from timm.models.beit import Beit

    beit = Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0, global_pool="")
    x = torch.rand(2, 3, 32, 32)
    tokens = beit.eval().forward_features(x)
    grid = TimmFeatures(beit)(x)
    assert tokens.shape == (2, 17, 32) and grid.shape == (2, 32, 4, 4)
    assert torch.equal(grid[:, :, 2, 1], tokens[:, 1 + 4 * 2 + 1])
