"""Rad-DINO as ``rad-dino``: the published layout loads exactly from the Hugging Face cache layout or a
folder, with the published preprocessing; a saved run rebuilds without any download."""

import json
import time

import numpy as np
import pytest
import torch
from conftest import chest_like

from cxrkit.models import create_model
from cxrkit.models.weights import PretrainedWeightsError
from cxrkit.run.model import build_network, network_spec

tf = pytest.importorskip("transformers")

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 14,
    "image_size": 56,
}
MEAN, STD = 0.5307, 0.2583  # any published values: the test checks they are the ones applied


def _publish(folder) -> torch.nn.Module:
    """A random small DINOv2 saved as the hub publishes Rad-DINO (weights, config, preprocessing)."""
    torch.manual_seed(0)
    encoder = tf.Dinov2Model(tf.Dinov2Config(**TINY)).eval()
    encoder.save_pretrained(folder)
    pre = {"image_mean": [MEAN] * 3, "image_std": [STD] * 3, "crop_size": {"height": 56, "width": 56}}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return encoder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache; the hub itself unreachable (a closed local port)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("CXRKIT_RAD_DINO", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    return tmp_path / "hub"


def _check_loaded(model, encoder) -> None:
    mine, theirs = model.backbone.m.state_dict(), encoder.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    img = chest_like(56, 56, seed=1)
    x = torch.from_numpy(img / 255.0).float()[None, None]
    x_hf = ((x - MEAN) / STD).expand(-1, 3, -1, -1)  # the published preprocessing: rescale, normalise, RGB
    with torch.no_grad():
        tokens = encoder(pixel_values=x_hf).last_hidden_state[0, 1:]  # 16 patch tokens, class token dropped
        grid = model.eval().forward_features(x)[0]
    assert grid.shape == (32, 4, 4)
    assert torch.allclose(grid.flatten(1).T, tokens, atol=1e-5)


def test_loads_from_the_hub_cache_layout(hub):
    repo = hub / "models--microsoft--rad-dino"
    encoder = _publish(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    model = create_model("rad-dino", 3, pretrained=True)
    assert float(model.mean) == pytest.approx(MEAN) and float(model.std) == pytest.approx(STD)
    _check_loaded(model, encoder)
    # a saved run stores the layout and normalisation: it rebuilds and predicts the same, offline
    rebuilt = build_network("rad-dino", network_spec({"name": "rad-dino", "pretrained": True}, model), 3)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 56, 56)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), model.eval()(x), atol=1e-6)


def test_loads_from_a_folder_named_by_cxrkit_rad_dino(hub, tmp_path, monkeypatch):
    encoder = _publish(tmp_path / "rad-dino")
    monkeypatch.setenv("CXRKIT_RAD_DINO", str(tmp_path / "rad-dino"))
    _check_loaded(create_model("rad-dino", 2, pretrained=True), encoder)
    monkeypatch.setenv("CXRKIT_RAD_DINO", str(tmp_path / "nowhere"))
    with pytest.raises(PretrainedWeightsError, match=r"CXRKIT_RAD_DINO=.*nowhere"):
        create_model("rad-dino", 2, pretrained=True)


def test_offline_fails_within_seconds_naming_the_folder(hub):
    t = time.perf_counter()
    with pytest.raises(
        PretrainedWeightsError, match=r"not in .*hub/models--microsoft--rad-dino.*CXRKIT_RAD_DINO"
    ):
        create_model("rad-dino", 2, pretrained=True)
    assert time.perf_counter() - t < 10


def test_heatmaps_explain_the_patch_grid(hub):
    from cxrkit.explain.gradcam import compute_heatmaps

    torch.manual_seed(0)
    model = create_model("rad-dino", 2, backbone_config=TINY)
    x = torch.rand(2, 1, 56, 56)
    heat = compute_heatmaps(model.eval(), x, 0)
    assert heat.shape == (2, 56, 56) and heat.min() >= 0 and heat.max() <= 1
    assert np.isfinite(heat.numpy()).all()
