"""A run folder is a self-contained model: moved elsewhere, with its training images and cache deleted,
it still predicts, triages and explains new files; and every path gives the same probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED, chest_like, png_bytes

import cxrkit
from cxrkit.cli import main
from cxrkit.run import files


def _write_folder(root: Path, n: int = 24) -> Path:
    """NORMAL/PNEUMONIA PNGs of different sizes; pneumonia ones carry a bright blob (learnable)."""
    for k in range(n):
        cls = "PNEUMONIA" if k % 2 else "NORMAL"
        img = chest_like(40 + k % 5, 36 + k % 3, seed=k)
        if cls == "PNEUMONIA":
            img[8:20, 6:16] = 250
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        (d / f"person{k}_x_{k}.png").write_bytes(png_bytes(img))
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("portable")
    data = _write_folder(base / "images")
    run = cxrkit.train(
        {
            "data": {"source": "folder", "path": str(data)},
            "prepare": {"size": 32, "mode": "pad"},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25},
            "model": {"name": "cnn3_32_64_128_bn"},
            "train": {"epochs": 2, "batch_size": 8, "progress": False, "rotate": 0, "shift": 0, "scale": 0},
        },
        log=lambda m: None,
        out=str(base / "runs"),
        name="folder",
        cache_dir=str(base / "cache"),
    )
    return {"base": base, "data": data, "run": run}


def test_training_writes_a_complete_package(folder_run):
    run = folder_run["run"]
    pkg = json.loads((run.path / files.PACKAGE).read_text())
    assert pkg["labels"] == ["No Finding", "Pneumonia"] and pkg["task"] == "multilabel"
    assert pkg["input"] == {
        "size": 32,
        "mode": "pad",
        "channels": 1,
        "value_range": [0.0, 1.0],
        "intensity": "none",
    }
    assert len(pkg["calibration"]["temperatures"]) == 2 and all(
        t > 0 for t in pkg["calibration"]["temperatures"]
    )
    assert set(pkg["thresholds"]) >= {"0.5", "0.2", "max_f1", "max_f3", "youden", "sensitivity:0.95"}
    assert pkg["operating_point"]["target_sensitivity"] == 0.95
    assert pkg["versions"]["cxrkit"] == cxrkit.__version__ and pkg["versions"]["torch"]
    assert run.spec.size == 32


def test_every_path_gives_the_same_probabilities(folder_run, tmp_path):
    run, data = folder_run["run"], folder_run["data"]
    # evaluation path: the run's cached test images
    assert main(["evaluate", str(run.path), "--bootstrap", "0", "--out", str(tmp_path / "ev")]) == 0
    ev = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    paths = [data / i for i in ev["image_id"]]
    # Python API on the files
    api = run.predict(paths)
    assert (api["error"] == "").all()
    # cxr predict on the same files
    assert (
        main(["predict", str(run.path), *map(str, paths), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    )
    cli = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    for lab in run.labels:
        assert np.abs(api[lab].to_numpy() - ev[f"prob:{lab}"].to_numpy()).max() <= 1e-6
        assert np.abs(api[lab].to_numpy() - cli[lab].astype(float).to_numpy()).max() <= 1e-6
    # calibrated: the evaluation's numbers are the temperature-scaled ones, not the raw sigmoid
    raw = run.probs(run.prepare(paths).images, calibrated=False)
    if not np.allclose(run.package.temperatures, 1.0):
        assert not np.allclose(raw[:, 1], api["Pneumonia"].to_numpy(), atol=1e-6)
    # the triage flag follows the stored operating point
    op = run.package.operating_point
    inside = api["in_distribution"].astype(bool)
    assert ((api["triage_score"] >= op.threshold) & inside == (api["triage_flag"] == "abnormal")).all()
    assert ((api["triage_flag"] == "out of distribution") == ~inside).all()
    assert np.allclose(api["triage_score"], 1 - api["No Finding"])


def test_predict_reports_unreadable_files_and_goes_on(folder_run, tmp_path, capsys):
    run = folder_run["run"]
    d = tmp_path / "mixed" / "sub"
    d.mkdir(parents=True)
    (d / "ok1.png").write_bytes(png_bytes(chest_like(40, 40, seed=1)))
    (d.parent / "ok2.png").write_bytes(png_bytes(chest_like(36, 60, seed=2)))  # any size from 32 px
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "empty").mkdir()  # a folder given with nothing to read in it is a row, not an abort
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                str(run.path),
                str(tmp_path / "mixed"),
                str(tmp_path / "empty"),
                "--out",
                str(out),
                "--heatmaps",
                str(tmp_path / "h"),
                "--quiet",
            ]
        )
        == 1
    )
    text = capsys.readouterr().out
    assert "2 of 4 images scored" in text and "2 NOT scored" in text and "broken.png" in text
    table = pd.read_csv(out, keep_default_na=False)
    assert "no PNG/JPEG/DICOM" in table.loc[table["source"].str.endswith("empty"), "error"].iloc[0]
    assert len(table) == 4 and set(table.columns) >= {
        "source",
        "image_id",
        "error",
        "No Finding",
        "Pneumonia",
        "triage_score",
        "triage_flag",
        "top_findings",
    }
    bad = table[table["image_id"] == "broken.png"].iloc[0]
    assert "corrupt" in bad["error"] and bad["Pneumonia"] == "" and bad["triage_flag"] == "unreadable"
    good = table[table["error"] == ""]
    assert len(good) == 2 and good["Pneumonia"].astype(float).between(0, 1).all()
    # chunked reading gives the same table as one pass
    from cxrkit.workflows.predict import predict_files

    small = predict_files(run, [tmp_path / "mixed"], chunk=1, progress=False)
    whole = predict_files(run, [tmp_path / "mixed"], progress=False)
    cols = [*run.labels, "triage_score"]
    assert np.allclose(small[cols], whole[cols], atol=1e-6, equal_nan=True)
    assert small[["source", "error", "triage_flag"]].equals(whole[["source", "error", "triage_flag"]])


def test_predict_on_the_real_sample_files(folder_run, tmp_path):
    samples = SHARED / "data" / "samples"
    if not samples.is_dir():
        pytest.skip(f"real data not available: {samples} is absent (set CXRKIT_SHARED to its folder)")
    out = tmp_path / "s.csv"
    assert main(["predict", str(folder_run["run"].path), str(samples), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == len(list(samples.iterdir())) == 5 and (table["error"] == "").all()
    # real X-rays to a run trained on 12 synthetic images: scored, and flagged to read manually
    assert (table["triage_flag"] == "out of distribution").all() and (table["ood_score"] > 1).all()


def test_arrays_of_any_size_and_dtype_are_one_image_each(folder_run, tmp_path):
    run = folder_run["run"]
    img = chest_like(60, 45, seed=5)
    img[0, 0], img[0, 1] = 0, 255  # full range: 16-bit data is scaled by its own range, as 16-bit PNGs are
    as_u16 = img.astype(np.uint16) * 257
    (tmp_path / "x16.png").write_bytes(png_bytes(as_u16))
    as_float = img.astype(np.float32) / 255.0
    as_rgb = np.dstack([img, img, img])
    table = run.predict([img, as_u16, as_float, as_rgb, np.stack([img, img]), tmp_path / "x16.png"])
    assert len(table) == 7 and (table["error"] == "").all()
    probs = table[list(run.labels)].to_numpy()
    assert np.allclose(probs, probs[0], atol=1e-7)  # the same picture, however it arrives
    with pytest.raises(ValueError, match=r"shape \(5, 5, 5, 5\) is not an image"):
        run.predict([np.zeros((5, 5, 5, 5))])
    # one array is one image in every entry point, grey or colour
    for one in (img, as_rgb):
        assert len(run.predict(one)) == 1
        w = run.triage(one, out=tmp_path / "t", log=lambda m: None)
        assert len(w) == 1 and w["image_id"].iloc[0] == "array[0]"
        assert len(run.explain(one, labels=["Pneumonia"], out=tmp_path / "x", log=lambda m: None)) == 1


# last in this module: it deletes the shared run's data and folder
def test_moved_run_without_its_data_predicts_triages_and_explains(folder_run, tmp_path, capsys):
    base = folder_run["base"]
    new = tmp_path / "new"
    new.mkdir()
    (new / "a.png").write_bytes(png_bytes(chest_like(70, 50, seed=99)))
    (new / "b.png").write_bytes(png_bytes(chest_like(50, 70, seed=98)))
    before = folder_run["run"].predict(new)
    moved = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(folder_run["run"].path, moved)
    shutil.rmtree(folder_run["data"])  # the training images are gone
    shutil.rmtree(base / "cache")  # and so is the cache
    shutil.rmtree(folder_run["run"].path)  # and the original folder

    run = cxrkit.load_run(moved)
    after = run.predict(new)
    assert np.allclose(after[list(run.labels)], before[list(run.labels)], atol=1e-7)

    assert main(["triage", str(moved), str(new), "--out", str(tmp_path / "t")]) == 0
    w = pd.read_csv(tmp_path / "t" / "worklist.csv")
    assert sorted(w["image_id"]) == ["a.png", "b.png"]
    assert w["flag"].isin(["abnormal", "normal", "out of distribution"]).all()
    assert json.loads((tmp_path / "t" / "triage.json").read_text())["source"] == "stored in the run"

    assert (
        main(
            ["explain", str(moved), str(new / "a.png"), "--label", "Pneumonia", "--out", str(tmp_path / "x")]
        )
        == 0
    )
    assert (tmp_path / "x" / "a__Pneumonia.png").is_file()
    assert run.explain(new / "b.png", top=1, out=tmp_path / "y", log=lambda m: None)[0].is_file()

    # scoring the run's own splits needs the data, and says so in one line
    assert main(["evaluate", str(moved)]) == 2
    # a target other than the stored one needs validation data too, and the message says so
    capsys.readouterr()
    assert main(["triage", str(moved), str(new), "--target-sensitivity", "0.8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sensitivity 0.8" in err[0] and "needs its data" in err[0]
