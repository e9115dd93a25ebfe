"""A run that starts from published chest-X-ray weights: warm-started head, linear probe, and a saved
run that predicts exactly like the network it trained (its input normalisation included)."""

import json

import numpy as np
import pytest
import torch
from conftest import chest_like

xrv = pytest.importorskip("torchxrayvision")


@pytest.mark.slow
def test_xrv_probe_run_warm_starts_and_predicts_like_it_trained(tmp_path, monkeypatch):
    from cxrkit.config import build_run_config
    from cxrkit.models.xrv import xrv_labels, xrv_weights_path
    from cxrkit.run.model import RunModel
    from cxrkit.training.loop import fit

    monkeypatch.setenv("HOME", str(tmp_path))  # torchxrayvision's cache under a temporary HOME
    weights = "densenet121-res224-all"
    torch.manual_seed(0)
    published = xrv.models.DenseNet()
    path = xrv_weights_path(weights)
    path.parent.mkdir(parents=True)
    torch.save(published, path)
    logs: list[str] = []
    cfg = build_run_config(
        {
            "data": {"source": "phantom", "n": 48, "size": 64},
            "prepare": {"size": 64},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25},
            "model": {"name": f"xrv:{weights}", "pretrained": True, "init_head": "from_pretrained"},
            "train": {
                "epochs": 0,
                "bottleneck_epochs": 2,
                "freeze": "backbone",
                "batch_size": 16,
                "progress": False,
            },
            "out": str(tmp_path / "runs"),
            "name": "xrv",
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = fit(cfg, log=logs.append)
    head_line = next(m for m in logs if m.startswith("head:"))
    assert "Effusion" in head_line and "Cardiomegaly" in head_line  # phantom labels named like xrv's
    spec = json.loads((run / "model.json").read_text())["model"]["config"]
    assert spec["input_norm"] == pytest.approx([0.5, 1 / 2048])
    path.unlink()  # a saved run needs neither the published file nor the network
    loaded = RunModel.load(run, device="cpu")
    assert float(loaded.model.std) == pytest.approx(1 / 2048)
    x = torch.rand(3, 1, 64, 64)
    state = torch.load(run / "best.pt", weights_only=True)["model_state"]
    from cxrkit.models import create_model

    fresh = create_model(f"xrv:{weights}", len(loaded.labels))  # the layout, untrained normalisation
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        expect = (x - 0.5) * 2048  # what the trained network saw: [-1024, 1024]
        assert torch.allclose(
            loaded.model(x), fresh.forward_head(fresh.pool(fresh.backbone(expect))), atol=1e-4
        )
    labels = list(loaded.labels)
    assert set(xrv_labels(weights)) & set(labels)
    assert np.isfinite(loaded.predict([chest_like(64, 64)])[labels[0]]).all()
