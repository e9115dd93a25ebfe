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
    model = create_model(name, len(LABELS), 1, False)
    x = torch.rand(2, 1, 64, 64)
    heat = compute_heatmaps(model, x, [label_index(LABELS, "Effusion"), label_index(LABELS, "mass")], method)
    assert heat.shape == (2, 64, 64) and heat.min() >= 0 and heat.max() <= 1
    assert all(torch.isclose(h.max(), torch.tensor(1.0)) or h.max() == 0 for h in heat)  # peak-normalised
    assert _hooks(model) == 0 and model.training  # hooks gone, train/eval mode restored


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
