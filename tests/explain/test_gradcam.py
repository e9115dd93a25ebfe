"""Grad-CAM/Grad-CAM++/CAM: label by name, input-resolution maps in [0, 1], hooks always removed."""

import pytest
import torch

from cxrkit.explain.gradcam import capture, compute_heatmaps, label_index
from cxrkit.labels import LABELS
from cxrkit.models import create_model, list_models


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_gradcam_for_every_registered_model(name):
    _check(name, "gradcam")


@pytest.mark.parametrize("name", ["cnn4_32_64_128_256_bn", "resnet18", "densenet121", "mobilenet_v3_small"])
def test_gradcam_plus_plus(name):
    _check(name, "gradcam++")


def _check(name: str, method: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, len(LABELS), 1, False, hidden=0)
    x = torch.rand(2, 1, 64, 64)
    cols = [label_index(LABELS, "Effusion"), label_index(LABELS, "mass")]
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.reset_running_stats()  # statistics of this batch: untrained ones make some networks' maps vanish
        bn.momentum = None
    with torch.no_grad():  # both labels point along the mean pooled feature: positive maps on average
        model.train()(x)
        direction = model.eval().pool(model.forward_features(x)).mean(0)
        model.class_weights()[cols] = direction
    model.train()
    heat = compute_heatmaps(model, x, cols, method)
    assert heat.shape == (2, 64, 64) and heat.min() >= 0
    assert torch.allclose(heat.flatten(1).amax(1), torch.ones(2))  # peak-normalised, never all zero
    assert _hooks(model) == 0 and model.training  # hooks gone, train/eval mode restored


def _by_hand(model, x: torch.Tensor, label: int) -> torch.Tensor:
    """CAM of a GAP + linear head computed directly: ReLU(sum_c W[label, c] A_c), upsampled, peak 1."""
    with torch.no_grad():
        acts = model.eval().forward_features(x)
        cam = torch.einsum("bchw,c->bhw", acts, model.head[-1].weight[label])
        cam = torch.nn.functional.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
        cam = cam.clamp_min(0)
        return cam / cam.flatten(1).amax(1)[:, None, None]


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_heatmaps_equal_a_hand_computation_and_differ_by_label(method):
    torch.manual_seed(2)
    model = create_model("cnn3_32_64_128_bn", 2, 1, False, hidden=0)
    with torch.no_grad():  # label 0 looks at the first 64 channels, label 1 at the last 64
        w = model.head[-1].weight
        w.zero_()
        w[0, :64], w[1, 64:] = torch.rand(64) + 0.1, torch.rand(64) + 0.1
    x = torch.rand(3, 1, 40, 56)
    maps = [compute_heatmaps(model, x, k, method) for k in (0, 1)]
    for k, heat in enumerate(maps):
        assert torch.allclose(heat, _by_hand(model, x, k), atol=1e-5)
        assert torch.allclose(heat.flatten(1).amax(1), torch.ones(3))  # non-zero, peak 1
    assert (maps[0] - maps[1]).abs().mean() > 0.05
    per_image = compute_heatmaps(model, x, [0, 1, 0], method)  # one label per image
    assert torch.allclose(per_image[1], maps[1][1]) and torch.allclose(per_image[2], maps[0][2])


def test_plain_cam_equals_gradcam_for_a_linear_head_and_needs_one():
    torch.manual_seed(1)
    model = create_model("cnn4_32_64_128_256_bn", 3, 1, False, hidden=0)
    x = torch.rand(3, 1, 48, 48)
    cam = compute_heatmaps(model, x, 1, "cam")
    grad = compute_heatmaps(model, x, 1, "gradcam")  # GAP + linear: gradient weights are W / (h w)
    assert torch.allclose(cam, grad, atol=1e-5)
    with pytest.raises(ValueError, match="hidden=0"):
        compute_heatmaps(create_model("cnn4_32_64_128_256_bn", 3, 1, False), x, 1, "cam")


def test_hooks_removed_even_on_error_and_labels_checked():
    model = create_model("cnn2_64_128_bn", 2, 1, False)
    with pytest.raises(RuntimeError), capture(model.cam_layer):
        assert _hooks(model) == 1
        model(torch.rand(1, 3, 32, 32))  # wrong channel count: the forward pass fails
    assert _hooks(model) == 0
    with pytest.raises(ValueError, match="not one of the model's labels"):
        label_index(("Effusion", "Mass"), "Fracture")
    assert label_index(("Effusion", "Pleural_Thickening"), "pleural thickening") == 1
    with pytest.raises(ValueError, match="method"):
        compute_heatmaps(model, torch.rand(1, 1, 32, 32), 0, "lime")
