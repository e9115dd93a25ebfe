"""Every registered model: 1-channel forward+backward, a CAM layer, freezing, offline weights errors."""

import time

import pytest
import torch

from cxrkit.models import create_model, list_models
from cxrkit.models.weights import PretrainedWeightsError

TIMM = ["timm:convnext_atto", "timm:legacy_xception", "timm:efficientnet_b0"]


@pytest.mark.parametrize("name", list_models() + TIMM)
def test_forward_backward_on_grey_input_and_cam_layer(name):
    torch.manual_seed(0)
    model = create_model(name, num_labels=3)
    seen = {}
    hook = model.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    x = torch.rand(2, 1, 64, 64)
    logits = model(x)
    hook.remove()
    assert logits.shape == (2, 3)
    fmap = seen["map"]
    assert fmap.ndim == 4 and fmap.shape[0] == 2 and fmap.shape[1] == model.pooled_dim
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    # every part that matters gets gradients (timm keeps a few unused head parameters)
    assert sum(g is not None for g in grads) >= 0.95 * len(grads)
    assert model.stems[0].weight.grad is not None and model.stems[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()  # no dropout: the forward pass is exactly features -> pool -> head (what Grad-CAM relies on)
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.pool(model.forward_features(x))), model(x), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_repeat_mode_keeps_an_rgb_stem(name):
    m = create_model(name, 2, grey="repeat")
    assert m.stems[0].in_channels == 3 and m(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    assert create_model(name, 2).stems[0].in_channels == 1


def test_fold_sums_pretrained_kernels(monkeypatch):
    import cxrkit.models.tv as tv

    rgb = create_model("resnet18", 2, in_chans=3)
    state = {k: v for k, v in rgb.backbone.state_dict().items()}
    full = {("conv1.weight" if k == "0.weight" else k): v for k, v in state.items()}
    monkeypatch.setattr(tv, "load_torchvision_state", lambda name: full)
    grey = create_model("resnet18", 2, pretrained=True)
    assert torch.allclose(grey.stems[0].weight, rgb.stems[0].weight.sum(1, keepdim=True))
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(grey.stems[0](x), rgb.stems[0](x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_offline_pretrained_fails_fast_with_instructions(monkeypatch, tmp_path):
    import torch.hub
    from torchvision.models import get_model_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    w = get_model_weights("resnet18").DEFAULT
    monkeypatch.setattr(type(w), "url", property(lambda self: "http://127.0.0.1:9/resnet18-f37072fd.pth"))
    t = time.perf_counter()
    with pytest.raises(
        PretrainedWeightsError, match=r"copy it to .*resnet18-f37072fd\.pth.*pretrained: false"
    ):
        create_model("resnet18", 2, pretrained=True)
    assert time.perf_counter() - t < 10


def test_freeze_modes():
    m = create_model("resnet18", 2)
    m.freeze("backbone")
    assert not any(p.requires_grad for p in m.backbone.parameters()) and all(
        p.requires_grad for p in m.head.parameters()
    )
    m.freeze("last_n", 1)
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert all(id(p) in trainable for p in m.blocks[-1].parameters())
    assert not any(id(p) in trainable for p in m.blocks[0].parameters())
    m.train()
    bn = [x for x in m.blocks[0].modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert all(not b.training for b in bn)  # frozen BN keeps its running statistics


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        create_model("resnet-18", 2)


def test_small_presets_match_the_literature():
    m = create_model("chestmnist_cnn", 14)
    convs = [x for x in m.backbone.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    drops = [x.p for x in m.modules() if isinstance(x, torch.nn.Dropout)]
    assert drops == [0.2, 0.2, 0.2, 0.4]
    assert [x.out_features for x in m.head if isinstance(x, torch.nn.Linear)] == [128, 14]
