"""Recipes for another site's images: photometric augmentation, corrupted validation, intensity, TTA."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_fit import tiny

from cxrkit.config import build_run_config
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.model import RunModel
from cxrkit.training.loop import fit, photometric_change


def weights(run):
    return load_checkpoint(run / "last.pt")["model_state"]


def same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_photometric_augmentation_is_seeded_and_changes_training(tmp_path):
    a = fit(tiny(tmp_path, epochs=1, photometric=0.8), log=lambda m: None)
    b = fit(tiny(tmp_path, epochs=1, photometric=0.8), log=lambda m: None)
    plain = fit(tiny(tmp_path, epochs=1), log=lambda m: None)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(plain))


def test_photometric_change_draws_per_batch_and_is_off_at_zero(tmp_path):
    cfg = tiny(tmp_path, photometric=1.0).train
    imgs = np.random.default_rng(0).integers(40, 200, (4, 16, 16), dtype=np.uint8)
    one = photometric_change(cfg, 0, 0)(imgs)
    assert np.array_equal(one, photometric_change(cfg, 0, 0)(imgs))
    assert not np.array_equal(one, photometric_change(cfg, 0, 1)(imgs))
    assert (one != imgs).any(axis=(1, 2)).all()  # p = 1: every image changes
    off = tiny(tmp_path).train
    assert photometric_change(off, 0, 0) is None


def test_corrupted_validation_selects_on_corrupt_auc(tmp_path):
    lines: list[str] = []
    run = fit(tiny(tmp_path, epochs=2, monitor="corrupt_auc"), log=lines.append)
    hist = pd.read_csv(run / "history.csv")
    assert "corrupt_auc" in hist and hist["corrupt_auc"].notna().all()
    assert not np.allclose(hist["corrupt_auc"], hist["macro_auc"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["monitor"] == "corrupt_auc"
    assert summary["best_value"] == pytest.approx(hist["corrupt_auc"].max())
    assert any("corrupt_auc" in line for line in lines)


def test_intensity_and_tta_are_stored_and_used_by_the_loaded_run(tmp_path):
    cfg = build_run_config(
        {
            "data": {"source": "phantom", "n": 120, "size": 32, "images_per_patient": 2},
            "prepare": {"size": 32, "intensity": "equalize"},
            "model": {"name": "cnn2_64_128_bn", "tta": 3},
            "train": {"epochs": 1, "batch_size": 32, "progress": False},
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run_dir = fit(cfg, log=lambda m: None)
    pkg = json.loads((run_dir / "model.json").read_text())
    assert pkg["input"]["intensity"] == "equalize" and pkg["model"]["config"]["tta"] == 3
    run = RunModel.load(run_dir, "cpu")
    assert run.model.intensity == "equalize" and run.tta == 3
    imgs = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    brighter = np.clip(imgs.astype(int) + 30, 0, 255).astype(np.uint8)
    # equalization: a brightness offset that clips nothing leaves the scores unchanged
    keep = imgs <= 225
    imgs, brighter = (
        np.where(keep, imgs, 225).astype(np.uint8),
        np.where(keep, brighter, 255).astype(np.uint8),
    )
    np.testing.assert_allclose(run.logits(imgs, tta=0), run.logits(brighter, tta=0), rtol=1e-4, atol=1e-4)
    # model.json was fitted on the logits the loaded run computes: with its 3 views
    from cxrkit.evaluate.metrics import summary_metrics
    from cxrkit.run.data import load_run_data
    from cxrkit.run.model import predict_split

    val = predict_split(run, load_run_data(run_dir), "val")
    stored = pkg["validation"]["macro_auc"]
    assert stored == pytest.approx(
        summary_metrics(val.targets, val.probs, 0.5, labels=run.labels)["macro_auc"]
    )
    plain = val.data.cache.images[val.index]
    no_tta = summary_metrics(val.targets, run.probs(np.asarray(plain), tta=0), 0.5, labels=run.labels)
    assert stored != pytest.approx(no_tta["macro_auc"], abs=1e-9)
