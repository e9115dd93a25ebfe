"""K-fold cross-validation: patient-grouped folds, one run per fold, and the parent that is their ensemble."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like

from cxrkit.config import build_run_config
from cxrkit.data.splits import check_no_patient_leak, fold_split, kfold_folds
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel, predict_split
from cxrkit.training.loop import fit


def test_folds_hold_whole_patients_and_spread_labels():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(300), 3).astype(str)
    y = (rng.random((900, 2)) < [0.3, 0.05]).astype(np.float32)
    fold = kfold_folds(pids, y, folds=5, test=0.2, seed=0)
    assert set(np.unique(fold)) == {0, 1, 2, 3, 4, 5}
    assert pd.Series(fold).groupby(pids).nunique().max() == 1  # a patient never spans two folds
    assert abs((fold == 0).mean() - 0.2) < 0.02
    sizes = np.bincount(fold)[1:]
    assert sizes.max() - sizes.min() <= 6  # whole patients of 3 images
    pos = np.array([y[fold == k, 1].sum() for k in range(1, 6)])  # the rare label spread over the folds
    assert pos.max() - pos.min() <= 2
    assert np.array_equal(fold, kfold_folds(pids, y, 5, 0.2, 0))
    assert not np.array_equal(fold, kfold_folds(pids, y, 5, 0.2, 1))


def test_fold_split_trains_on_the_other_folds_and_validates_on_its_own():
    fold = np.array([1, 1, 2, 2, 3, 3, 0, 0])
    s = fold_split(fold, 2)
    assert (
        s["val"].tolist() == [2, 3] and s["train"].tolist() == [0, 1, 4, 5] and s["test"].tolist() == [6, 7]
    )
    parent = fold_split(fold, 0)
    assert "train" not in parent and parent["val"].tolist() == [0, 1, 2, 3, 4, 5]
    check_no_patient_leak(np.arange(8).astype(str), s)


def test_kfold_options_are_checked():
    base = {"data": {"source": "phantom"}}
    with pytest.raises(ValueError, match="folds"):
        build_run_config({**base, "split": {"method": "kfold", "folds": 1}})
    with pytest.raises(ValueError, match="fold"):
        build_run_config({**base, "split": {"method": "kfold", "folds": 3, "fold": 4}})
    with pytest.raises(ValueError, match="kfold"):
        build_run_config({**base, "split": {"method": "kfolds"}})
    cfg = build_run_config({**base, "split": {"method": "kfold", "folds": 3, "test": 0.25}})
    assert cfg.partition.folds == 3 and cfg.partition.fold == 0


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfold")
    cfg = build_run_config(
        {
            "data": {"source": "phantom", "n": 240, "size": 32, "images_per_patient": 2},
            "prepare": {"size": 32},
            "split": {"method": "kfold", "folds": 3, "test": 0.2},
            "model": {"name": "cnn2_64_128_bn"},
            "train": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "progress": False, "patience": 0},
            "out": str(tmp / "runs"),
            "name": "cv",
            "cache_dir": str(tmp / "cache"),
        }
    )
    lines: list[str] = []
    return fit(cfg, log=lines.append), lines


def test_kfold_run_trains_each_fold_and_reports_mean_and_sd(kfold_run):
    parent, lines = kfold_run
    folds = [parent / f"fold-{k}" for k in (1, 2, 3)]
    assert all((f / "model.json").is_file() and (f / "best.pt").is_file() for f in folds)
    cv = json.loads((parent / "cv.json").read_text())
    # each fold's clean validation AUC at its best epoch, read from its own history.csv
    best = []
    for f in folds:
        hist = pd.read_csv(f / "history.csv")
        best.append(hist.loc[hist["macro_auc"].idxmax(), "macro_auc"])  # monitor macro_auc: best = max
    assert cv["per_fold"] == pytest.approx(best) and cv["monitor"] == "macro_auc"
    assert cv["mean"] == pytest.approx(np.mean(best)) and cv["sd"] == pytest.approx(np.std(best, ddof=1))
    assert any("cross-validation" in line and "±" in line for line in lines)
    # each fold validates on its own fold, trains on the others; the test patients are in no fold's train
    splits = [pd.read_csv(f / "split.csv", dtype=str) for f in folds]
    vals = [set(s.loc[s["split"] == "val", "image_id"]) for s in splits]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2])
    tests = [set(s.loc[s["split"] == "test", "image_id"]) for s in splits]
    assert tests[0] == tests[1] == tests[2] and tests[0]
    assert set(splits[0].loc[splits[0]["split"] == "train", "image_id"]) == vals[1] | vals[2]


def test_the_parent_predicts_with_the_folds_average(kfold_run):
    parent, _ = kfold_run
    run = RunModel.load(parent, "cpu")
    assert len(run.members) == 3
    images = np.stack([chest_like(32, 32, seed=k) for k in range(6)])  # assessable: predict scores them
    members = [RunModel.load(parent / f"fold-{k}", "cpu").logits(images) for k in (1, 2, 3)]
    np.testing.assert_allclose(run.logits(images), np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    table = run.predict([images[0]])
    assert table["triage_flag"].iloc[0] in ("normal", "abnormal", "out of distribution")


def test_the_parents_validation_is_scored_out_of_fold(kfold_run):
    parent, _ = kfold_run
    run = RunModel.load(parent, "cpu")
    data = load_run_data(parent)
    val = predict_split(run, data, "val")
    assert len(val.index) == len(data.partition["val"])
    ids = val.meta["image_id"].astype(str).to_numpy()
    for k in (1, 2, 3):
        member = RunModel.load(parent / f"fold-{k}", "cpu")
        own = pd.read_csv(parent / f"fold-{k}" / "split.csv", dtype=str)
        mine = np.isin(ids, own.loc[own["split"] == "val", "image_id"])
        expect = member.package.probs(member.logits(np.asarray(data.cache.images[val.index[mine]])), False)
        np.testing.assert_allclose(val.raw[mine], expect, rtol=1e-5, atol=1e-6)
        whole = run.package.probs(run.logits(np.asarray(data.cache.images[val.index[mine]])), False)
        assert not np.allclose(val.raw[mine], whole)  # not the average, which saw these images
    cv = json.loads((parent / "cv.json").read_text())
    oof = summary_metrics(val.targets, val.raw, 0.5, labels=run.labels)["macro_auc"]
    assert cv["out_of_fold_macro_auc"] == pytest.approx(oof)
    assert json.loads((parent / "summary.json").read_text())["val"]["macro_auc"] == pytest.approx(oof)
    # the test split is scored by the average of all folds
    test = predict_split(run, data, "test")
    np.testing.assert_allclose(
        test.raw, run.package.probs(run.logits(np.asarray(data.cache.images[test.index])), False), rtol=1e-5
    )


def test_an_ensemble_is_not_exported(kfold_run):
    from cxrkit.workflows.export import export_run

    with pytest.raises(ValueError, match="K-fold ensemble"):
        export_run(kfold_run[0], log=lambda m: None)


def test_a_parent_is_evaluated_and_its_digest_follows_the_folds(kfold_run, tmp_path):
    import shutil

    from cxrkit.run.onnx import weights_digest
    from cxrkit.workflows.evaluate import EvalConfig, evaluate_run

    parent = tmp_path / "cv"
    shutil.copytree(kfold_run[0], parent)
    out = evaluate_run(parent, EvalConfig(split="test", n_boot=20, samples=2), log=lambda m: None)
    m = json.loads((out / "evaluation.json").read_text())
    assert m["weights_sha256"] == weights_digest(parent) and m["images"] == len(
        pd.read_csv(parent / "split.csv").query("split == 'test'")
    )
    before = weights_digest(parent)
    shutil.copy(parent / "fold-1" / "best.pt", parent / "fold-2" / "best.pt")  # a fold retrained
    assert weights_digest(parent) != before


def test_package_problems_of_an_ensemble_are_refused(kfold_run, tmp_path):
    import shutil

    from cxrkit.run.package import read_package

    for key, value, match in (
        ("ensemble", ["."], "fold folder names"),
        ("ensemble", [], "fold folder names"),
        ("ensemble", ["fold-1", "../x"], "fold folder names"),
        ("tta", 9, "tta"),
        ("intensity", "equalize", "intensity"),
    ):
        run = tmp_path / f"{key}-{len(str(value))}"
        shutil.copytree(kfold_run[0], run)
        doc = json.loads((run / "model.json").read_text())
        doc["model"]["config"][key] = value
        (run / "model.json").write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=match):
            read_package(run)
    assert json.loads((kfold_run[0] / "model.json").read_text())["format"] == 2  # old readers refuse it


def test_a_fold_cut_short_before_its_first_checkpoint_is_started_again(kfold_run, tmp_path):
    import shutil

    parent = tmp_path / "cv"
    shutil.copytree(kfold_run[0], parent)
    for name in ("best.pt", "last.pt", "model.json", "summary.json", "history.csv"):
        (parent / "fold-2" / name).unlink(missing_ok=True)  # config.yaml and split.csv stay
    (parent / "model.json").unlink()
    fit(resume=parent, log=lambda m: None)
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith("fold")) == [
        "fold-1",
        "fold-2",
        "fold-3",
    ]
    assert (parent / "fold-2" / "model.json").is_file() and (parent / "model.json").is_file()
    with pytest.raises(ValueError, match=r"cannot change partition\.folds"):
        fit(resume=parent, overrides={"partition.folds": 4}, log=lambda m: None)


def test_resuming_a_parent_trains_only_the_missing_folds(kfold_run, tmp_path):
    import shutil

    parent = tmp_path / "cv"
    shutil.copytree(kfold_run[0], parent)
    shutil.rmtree(parent / "fold-3")
    (parent / "model.json").unlink()
    lines: list[str] = []
    fit(resume=parent, log=lines.append)
    assert sum("already trained" in line for line in lines) == 2
    assert (parent / "fold-3" / "model.json").is_file() and (parent / "model.json").is_file()


def test_robustness_of_an_ensemble_scores_its_validation_out_of_fold(kfold_run, tmp_path):
    from cxrkit.workflows.robustness import RobustnessConfig, robustness_run

    parent, _ = kfold_run
    cfg = RobustnessConfig(split="val", shifts=("gamma",), severities=(5,), out=str(tmp_path / "rob"))
    out = robustness_run(parent, cfg, log=lambda m: None)
    summary = json.loads((out / "robustness.json").read_text())
    cv = json.loads((parent / "cv.json").read_text())
    assert summary["clean_auc"] == pytest.approx(cv["out_of_fold_macro_auc"])
    assert summary["images"] == len(pd.read_csv(parent / "split.csv").query("split == 'val'"))
