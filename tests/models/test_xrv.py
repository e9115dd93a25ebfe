"""torchxrayvision's networks as ``xrv:<weights>``: published files load exactly, inputs map to its range.

No test downloads: each builds a network with random weights, saves it where torchxrayvision keeps
its files (under a temporary HOME), and loads it back through cxrkit.
"""

import time

import numpy as np
import pytest
import torch
from conftest import chest_like

from cxrkit.config import ModelConfig
from cxrkit.models import create_model
from cxrkit.models.weights import PretrainedWeightsError

xrv = pytest.importorskip("torchxrayvision")
from cxrkit.models.xrv import (  # noqa: E402
    _resnet_shell,
    init_head_from_pretrained,
    xrv_labels,
    xrv_weight_names,
    xrv_weights_path,
)


@pytest.fixture
def xrv_home(tmp_path, monkeypatch):
    """torchxrayvision's cache (``~/.torchxrayvision/models_data``) under an empty temporary HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _publish_densenet(weights: str) -> torch.nn.Module:
    """A random DenseNet saved the way torchxrayvision publishes it (a pickled module)."""
    torch.manual_seed(1)
    ref = xrv.models.DenseNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really tested
        for bn in (m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    path = xrv_weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref, path)
    return ref.eval()


def _image() -> np.ndarray:
    img = chest_like(224, 224, seed=3)
    assert img.dtype == np.uint8 and img.min() < 30 and img.max() > 200  # a wide range of grey values
    return img


def test_densenet_loads_exactly_and_matches_xrv_own_preprocessing(xrv_home):
    weights = "densenet121-res224-nih"
    ref = _publish_densenet(weights)
    model = create_model(f"xrv:{weights}", 3, pretrained=True).eval()
    mine, theirs = model.backbone[0].state_dict(), ref.features.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    img = _image()
    x_xrv = torch.from_numpy(xrv.datasets.normalize(img, 255)).float()[None, None]  # their [-1024, 1024]
    x_cxr = torch.from_numpy(img / 255.0).float()[None, None]  # cxrkit's [0, 1]
    with torch.no_grad():
        expect = ref.features2(x_xrv)
        got = model.pool(model.forward_features(x_cxr))
    assert torch.allclose(got, expect, rtol=1e-4, atol=1e-5)
    # warm start: outputs named like the published ones start from its rows
    labels = ["Effusion", "Pleural Thickening", "Not A Finding"]
    assert init_head_from_pretrained(model, labels) == ["Effusion", "Pleural Thickening"]
    with torch.no_grad():
        theirs_logits = ref(x_xrv)[0]
        mine_logits = model(x_cxr)[0]
    names = xrv_labels(weights)
    assert torch.allclose(mine_logits[0], theirs_logits[names.index("Effusion")], atol=1e-4)
    assert torch.allclose(mine_logits[1], theirs_logits[names.index("Pleural_Thickening")], atol=1e-4)


def test_resnet_state_file_loads_exactly(xrv_home):
    weights = "resnet50-res512-all"
    torch.manual_seed(2)
    ref = _resnet_shell(len(xrv_labels(weights))).model
    path = xrv_weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    model = create_model(f"xrv:{weights}", 2, pretrained=True)
    mine = model.backbone.state_dict()
    theirs = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    pairs = zip(mine.values(), theirs.values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert model.feature_dim == 2048 and float(model.std) == pytest.approx(1 / 2048)


def test_offline_fails_fast_naming_the_file_and_folder(xrv_home, monkeypatch):
    weights = "densenet121-res224-all"
    entry = dict(xrv.models.model_urls[weights])
    name = entry["weights_url"].rsplit("/", 1)[-1]
    monkeypatch.setitem(
        xrv.models.model_urls, weights, {**entry, "weights_url": f"http://127.0.0.1:9/{name}"}
    )
    t = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=rf"copy it to .*\.torchxrayvision/models_data/{name}"):
        create_model(f"xrv:{weights}", 2, pretrained=True)
    assert time.perf_counter() - t < 10
    assert not xrv_weights_path(weights).exists()  # no half-written file left behind


def test_a_saved_run_rebuilds_without_the_weights_file(xrv_home):
    for weights in ("densenet121-res224-all", "resnet50-res512-all"):
        model = create_model(f"xrv:{weights}", 2)  # random weights, published layout: no file, no network
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)
    assert "densenet121-res224-chex" in xrv_weight_names() and "resnet50-res512-all" in xrv_weight_names()
    with pytest.raises(ValueError, match="unknown torchxrayvision weights 'densenet121-res224-foo'"):
        create_model("xrv:densenet121-res224-foo", 2)


def test_init_head_from_pretrained_is_checked_in_the_config():
    ModelConfig(name="xrv:densenet121-res224-all", pretrained=True, init_head="from_pretrained")
    with pytest.raises(ValueError, match="needs an xrv:<weights> model with pretrained: true"):
        ModelConfig(name="xrv:densenet121-res224-all", pretrained=False, init_head="from_pretrained")
    with pytest.raises(ValueError, match="needs an xrv:<weights> model"):
        ModelConfig(name="resnet18", pretrained=True, init_head="from_pretrained")
    with pytest.raises(ValueError, match="expected random or from_pretrained"):
        ModelConfig(init_head="imagenet")
    with pytest.raises(ValueError, match="needs a pretrained xrv: model"):
        init_head_from_pretrained(create_model("xrv:densenet121-res224-all", 2), ["Effusion", "Mass"])
