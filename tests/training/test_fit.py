"""fit(): run folders, repeatability, resume, early stopping, two-stage recipe, single-label sets."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import chest_like, jpeg_bytes

from cxrkit.config import build_run_config
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.training import loop
from cxrkit.training.loop import fit

TIMING = ["seconds", "img_per_s"]


def tiny(tmp_path, **train) -> object:
    t = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "progress": False, "patience": 0, **train}
    return build_run_config(
        {
            "data": {"source": "phantom", "n": 120, "size": 32, "images_per_patient": 2},
            "prepare": {"size": 32},
            "model": {"name": "cnn2_64_128_bn"},
            "train": t,
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )


def metrics(run) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv").drop(columns=TIMING)


def test_run_folder_holds_everything(tmp_path):
    run = fit(tiny(tmp_path), log=lambda m: None)
    for f in ("config.yaml", "split.csv", "history.csv", "curves.png", "best.pt", "last.pt", "summary.json"):
        assert (run / f).exists(), f
    assert len(pd.read_csv(run / "history.csv")) == 2
    ck = load_checkpoint(run / "best.pt")
    assert ck["model_name"] == "cnn2_64_128_bn" and len(ck["labels"]) == 15 and "train:" in ck["config_yaml"]
    split = pd.read_csv(run / "split.csv", dtype=str)
    assert split.groupby("patient_id")["split"].nunique().max() == 1
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2


def test_two_seeded_runs_agree(tmp_path):
    a = fit(tiny(tmp_path), log=lambda m: None)
    b = fit(tiny(tmp_path), log=lambda m: None)
    assert a != b
    pd.testing.assert_frame_equal(metrics(a), metrics(b))
    sa, sb = load_checkpoint(a / "last.pt")["model_state"], load_checkpoint(b / "last.pt")["model_state"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_exactly_where_it_stopped(tmp_path, monkeypatch):
    straight = fit(tiny(tmp_path, epochs=3, schedule="cosine"), log=lambda m: None)
    real = loop.train_one_epoch

    def crash_at_third(*args, **kw):
        if args[5] == 2:  # epoch index
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_one_epoch", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(tmp_path, epochs=3, schedule="cosine"), log=lambda m: None)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    interrupted = sorted((tmp_path / "runs").iterdir())[-1]
    assert len(pd.read_csv(interrupted / "history.csv")) == 2
    msgs = []
    fit(resume=interrupted, log=msgs.append)
    assert any("resuming" in m and "epoch 3/3" in m for m in msgs)
    pd.testing.assert_frame_equal(metrics(interrupted), metrics(straight))


def test_early_stopping_restores_and_saves_the_best_state(tmp_path, monkeypatch):
    aucs = iter([0.6, 0.7, 0.65, 0.64, 0.9])
    real = loop.evaluate

    def scripted(*a, **k):
        out = real(*a, **k)
        out["macro_auc"] = next(aucs)
        return out

    monkeypatch.setattr(loop, "evaluate", scripted)
    run = fit(tiny(tmp_path, epochs=5, patience=2), log=lambda m: None)
    s = json.loads((run / "summary.json").read_text())
    assert s["best_epoch"] == 2 and s["epochs_run"] == 4 and s["stopped_early"]
    assert load_checkpoint(run / "best.pt")["epoch"] == 1


def test_two_stage_bottleneck_then_fine_tune_last_block(tmp_path):
    torch.manual_seed(0)
    from cxrkit.models import create_model

    init = create_model("cnn2_64_128_bn", 15)
    run = fit(tiny(tmp_path, epochs=1, bottleneck_epochs=20, unfreeze_last=1), log=lambda m: None)
    feats = np.load(run / "bottleneck.npz")
    assert feats["train"].shape[1] == 128 and len(feats["val"]) > 0
    hist = pd.read_csv(run / "history.csv")
    assert (hist["stage"] == "head").sum() == 20 and (hist["stage"] == "train").sum() == 1
    state = load_checkpoint(run / "last.pt")["model_state"]
    first = [k for k in state if k.startswith("backbone.0.")]
    last = [k for k in state if k.startswith("backbone.1.") and k.endswith("weight")]
    init_state = init.state_dict()
    assert all(torch.equal(state[k], init_state[k]) for k in first)  # frozen: untouched
    assert not all(torch.equal(state[k], init_state[k]) for k in last)  # fine-tuned


@pytest.fixture
def pneumonia_folder(tmp_path):
    root = tmp_path / "kids"
    # Kermany-style names that no file of the Kermany set carries (numbers from 9000)
    for cls, prefix in (("NORMAL", "IM-9{:03d}-0001"), ("PNEUMONIA", "person90{:02d}_virus_1")):
        (root / cls).mkdir(parents=True)
        for i in range(30):
            img = np.dstack([chest_like(40, 40, i + (100 if cls == "PNEUMONIA" else 0))] * 3)
            if cls == "PNEUMONIA":
                img[18:30, 8:20] = 230  # an opacity
            (root / cls / f"{prefix.format(i)}.jpeg").write_bytes(jpeg_bytes(img))
    return root


def test_single_label_folder_trains_with_softmax_ce(tmp_path, pneumonia_folder):
    cfg = build_run_config(
        {
            "data": {"source": "folder", "path": str(pneumonia_folder)},
            "prepare": {"size": 32},
            "model": {"name": "cnn2_64_128_bn"},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            "train": {"epochs": 3, "batch_size": 16, "loss": "ce", "progress": False},
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = fit(cfg, log=lambda m: None)
    ck = load_checkpoint(run / "best.pt")
    assert ck["labels"] == ["No Finding", "Pneumonia"] and ck["task"] == "binary"
    assert pd.read_csv(run / "history.csv")["macro_auc"].max() > 0.8


def test_label_subset_and_unknown_label(tmp_path):
    run = fit(tiny(tmp_path, epochs=1, labels=["mass", "Pleural Thickening"]), log=lambda m: None)
    assert load_checkpoint(run / "best.pt")["labels"] == ["Mass", "Pleural_Thickening"]
    with pytest.raises(ValueError, match="'Tuberculosis' is not a label"):
        fit(tiny(tmp_path, epochs=1, labels=["Tuberculosis"]), log=lambda m: None)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match=r"train\.optimizer 'adamm'"):
        build_run_config({"train": {"optimizer": "adamm"}})
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['epoch'\]"):
        build_run_config({"train": {"epoch": 3}})


@pytest.mark.parametrize(
    "train",
    [
        {"optimizer": "sgd", "schedule": "exponential", "decay_epochs": 1.0, "loss": "weighted_bce"},
        {"optimizer": "adamw", "schedule": "cosine", "warmup_epochs": 1, "loss": "focal", "monitor": "loss"},
        {"optimizer": "adam", "schedule": "plateau", "loss": "pos_weight_bce", "monitor": "macro_f1"},
        {
            "optimizer": "adam",
            "freeze": "backbone",
            "monitor": "macro_recall",
            "grad_clip": 1.0,
            "steps_per_epoch": 1,
            "hflip": True,
            "channels_last": True,
        },
    ],
    ids=["sgd-exp-wbce", "adamw-cosine-focal", "plateau-posweight", "frozen-capped"],
)
def test_every_recipe_option_trains(tmp_path, train):
    run = fit(tiny(tmp_path, **train), log=lambda m: None)
    hist = pd.read_csv(run / "history.csv")
    assert len(hist) == 2 and np.isfinite(hist["train_loss"]).all()
    if train.get("schedule") == "exponential":
        assert np.isclose(hist["lr"].iloc[1], 2e-3 * 0.1)  # lr0 * 0.1 ** (epoch / 1)
    if train.get("freeze") == "backbone":
        ck = load_checkpoint(run / "last.pt")["model_state"]
        from cxrkit.models import create_model

        torch.manual_seed(0)
        init = create_model("cnn2_64_128_bn", 15).state_dict()
        assert all(
            torch.equal(ck[k], init[k])
            for k in ck
            if k.startswith("backbone.") and "running" not in k and "num_batches" not in k
        )
