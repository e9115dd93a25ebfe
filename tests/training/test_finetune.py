"""``cxr train --init-from RUN``: the parent's weights, labels and input are kept; contradictions refused."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrkit.cli import main
from cxrkit.config import build_run_config
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.run.checkpoint import load_checkpoint
from cxrkit.run.data import load_run_data
from cxrkit.run.lineage import read_lineage
from cxrkit.training.finetune import finetune_config, load_parent
from cxrkit.training.loop import fit

QUIET = {"train.progress": False}


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A one-epoch run on 120 phantoms at 32 px (about a second)."""
    base = tmp_path_factory.mktemp("parent")
    cfg = build_run_config(
        {
            "data": {"source": "phantom", "n": 120, "size": 32, "images_per_patient": 2},
            "prepare": {"size": 32},
            "model": {"name": "cnn2_64_128_bn", "dropout": 0.1},
            "train": {"epochs": 1, "batch_size": 32, "progress": False, "patience": 0},
            "triage": {"target_sensitivity": 0.9},
            "out": str(base / "runs"),
            "name": "parent",
            "cache_dir": str(base / "cache"),
        }
    )
    return fit(cfg, log=lambda m: None)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """40 phantom PNGs with Effusion and No Finding of the run's labels, and a label the run lacks."""
    root = tmp_path_factory.mktemp("table")
    ds = PhantomDataset(40, 32, seed=7)
    (root / "img").mkdir()
    rows = []
    for k in range(40):
        Image.fromarray(ds.load_image(k)).save(root / "img" / f"{k}.png")
        rows.append(
            {
                "path": f"img/{k}.png",
                "patient_id": f"p{k}",
                "effusion": "01"[k % 2],
                "NORMAL": "10"[k % 2],
                "Fracture": "1",
            }
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _over(table: Path, tmp_path: Path, **more) -> dict:
    return {
        "data.source": "table",
        "data.path": str(table),
        "train.epochs": 1,
        "partition.train": 0.5,
        "partition.val": 0.5,
        "partition.test": 0.0,
        "out": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
        **QUIET,
        **more,
    }


def test_the_new_run_starts_from_the_parents_weights_and_keeps_its_labels(parent, table, tmp_path):
    logs: list[str] = []
    par = load_parent(parent)
    cfg = finetune_config(par, {}, _over(table, tmp_path, **{"train.lr": 1e-12, "name": "child"}))
    assert (cfg.prepare.size, cfg.model.name, cfg.model.dropout) == (32, "cnn2_64_128_bn", 0.1)
    assert cfg.triage.target_sensitivity == 0.9 and not cfg.model.pretrained  # RUN's triage section
    child = fit(cfg, init_from=parent, log=logs.append)
    mine, theirs = load_checkpoint(child / "best.pt"), load_checkpoint(parent / "best.pt")
    assert mine["labels"] == theirs["labels"] and len(mine["labels"]) == 15  # RUN's, in RUN's order
    params = [k for k in theirs["model_state"] if "running" not in k and "num_batches" not in k]
    for k in params:  # lr 1e-12: the parameters are still the parent's
        torch.testing.assert_close(mine["model_state"][k], theirs["model_state"][k], atol=1e-6, rtol=0)
    fresh = fit(build_run_config(cfg_doc(cfg)), log=lambda m: None)  # the same recipe without --init-from
    other = load_checkpoint(fresh / "best.pt")["model_state"]
    shared = [k for k in params if other[k].shape == theirs["model_state"][k].shape]  # its head has 3 labels
    assert not any(
        torch.allclose(other[k], theirs["model_state"][k], atol=1e-3) for k in shared if other[k].ndim > 1
    )
    lineage = read_lineage(child)
    assert lineage.init_from == str(parent.resolve())
    assert lineage.parent_weights_sha256 == hashlib.sha256((parent / "best.pt").read_bytes()).hexdigest()
    assert lineage.dropped_labels == ("Fracture",) and "Effusion" not in lineage.missing_labels
    assert len(lineage.missing_labels) == 13
    assert any("dropped the data's labels RUN does not predict: Fracture" in m for m in logs)
    # its data, re-read from the run folder, is in the parent's label order, unknown labels NaN
    data = load_run_data(child)
    assert data.labels == tuple(theirs["labels"])
    known = ~np.isnan(data.targets).all(0)
    assert [lab for lab, k in zip(data.labels, known, strict=True) if k] == ["Effusion", "No Finding"]
    assert json.loads((child / "model.json").read_text())["labels"] == theirs["labels"]


def cfg_doc(cfg) -> dict:
    """The config as a YAML mapping, without the --init-from parts: a fresh start of the same recipe."""
    import yaml

    doc = yaml.safe_load(cfg.to_yaml())
    doc["name"] = "fresh"
    return doc


def test_a_fine_tuned_run_resumes_with_its_parents_network_and_labels(parent, table, tmp_path):
    par = load_parent(parent)
    child = fit(finetune_config(par, {}, _over(table, tmp_path, name="c")), init_from=par, log=lambda m: None)
    again = fit(resume=child, overrides={"train.epochs": 2}, log=lambda m: None)
    assert again == child and len(pd.read_csv(child / "history.csv")) == 2
    assert load_checkpoint(child / "best.pt")["labels"] == list(par.labels)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"prepare.size": 64}, "prepare.size 64 (RUN's weights take 32)"),
        ({"prepare.intensity": "equalize"}, "prepare.intensity 'equalize'"),
        ({"model.name": "cnn3_32_64_128"}, "model.name 'cnn3_32_64_128'"),
        ({"model.dropout": 0.5}, "model.dropout 0.5 (RUN's is 0.1)"),
        ({"train.labels": "Effusion"}, "train.labels Effusion (RUN's labels are kept"),
        ({"partition.method": "kfold"}, "partition.method kfold is not supported"),
    ],
)
def test_settings_that_contradict_the_parent_are_refused(parent, table, tmp_path, override, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        finetune_config(load_parent(parent), {}, _over(table, tmp_path, **override))


def test_the_same_values_as_the_parent_and_model_tta_are_accepted(parent, table, tmp_path):
    doc = {"prepare": {"size": 32, "mode": "pad"}, "model": {"name": "cnn2_64_128_bn", "tta": 2}}
    cfg = finetune_config(load_parent(parent), doc, _over(table, tmp_path))
    assert cfg.model.tta == 2 and cfg.prepare.size == 32


def test_data_without_any_of_the_parents_labels_is_refused(parent, tmp_path):
    ds = PhantomDataset(4, 32, seed=1)
    (tmp_path / "img").mkdir()
    for k in range(4):
        Image.fromarray(ds.load_image(k)).save(tmp_path / "img" / f"{k}.png")
    pd.DataFrame({"path": [f"img/{k}.png" for k in range(4)], "Fracture": ["1", "0", "1", "0"]}).to_csv(
        tmp_path / "other.csv", index=False
    )
    par = load_parent(parent)
    cfg = finetune_config(par, {}, _over(tmp_path / "other.csv", tmp_path))
    with pytest.raises(ValueError, match=r"none of RUN's labels .* is among the data's \(Fracture\)"):
        fit(cfg, init_from=par, log=lambda m: None)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_what_cannot_be_a_parent_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        load_parent(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"best\.pt is missing"):
        load_parent(tmp_path / "empty")


def test_the_cli_refuses_with_one_line(parent, table, tmp_path, capsys):
    argv = ["train", "--init-from", str(parent), *(f"{k}={v}" for k, v in _over(table, tmp_path).items())]
    assert main([*argv, "prepare.size=64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prepare.size 64" in err and "leave these out" in err
    assert main([*argv, "--resume", str(parent)]) == 2
    assert "give one of them" in capsys.readouterr().err
