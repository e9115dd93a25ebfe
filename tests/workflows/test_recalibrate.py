"""``cxr validate --recalibrate``: a site-calibrated run folder, checked through every path that uses it.

The site is the phantom run's test split as an NIH folder. The new run's decisions are checked against
``cxr predict`` on the site's PNG files (an independent path: file decoding, not the cache), its
temperatures against a refit from the parent's logits, and it must work as any run folder does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like, png_bytes

from cxrkit.cli import main
from cxrkit.config import DataConfig
from cxrkit.labels import NO_FINDING


@pytest.fixture(scope="module")
def site_run(phantom_run, phantom_site, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("recal")
    out = base / "site-run"
    argv = ["validate", str(phantom_run), str(phantom_site), "--recalibrate", "--calibration-share", "0.4"]
    argv += ["--out", str(out), "--bootstrap", "50", "--cache-dir", str(base / "cache"), "--seed", "3"]
    assert main(argv) == 0
    return out


def _predict(run: Path, site: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert main(["predict", str(run), str(site / "images_001" / "images"), "--out", str(out), *extra]) == 0
    return pd.read_csv(out).set_index("image_id")


def _truth(site: Path) -> pd.Series:
    """Abnormal (True) per image from the site's own CSV."""
    frame = pd.read_csv(site / "Data_Entry_2017.csv").set_index("Image Index")
    return frame["Finding Labels"] != NO_FINDING


def test_the_site_run_records_where_it_came_from_and_splits_by_patient(site_run, phantom_run, phantom_site):
    model = json.loads((site_run / "model.json").read_text())
    s = model["validation"]["site"]
    assert s["parent_run"] == str(phantom_run)
    assert s["parent_weights_sha256"] == hashlib.sha256((phantom_run / "best.pt").read_bytes()).hexdigest()
    assert (site_run / "best.pt").read_bytes() == (phantom_run / "best.pt").read_bytes()
    split = pd.read_csv(site_run / "split.csv", dtype=str)
    assert set(split["split"]) == {"val", "test"}
    val, test = (split[split["split"] == k] for k in ("val", "test"))
    assert not set(val["patient_id"]) & set(test["patient_id"])
    truth = _truth(phantom_site)
    assert sorted(split["image_id"]) == sorted(truth.index)
    assert (s["calibration_images"], s["evaluation_images"]) == (len(val), len(test))
    assert s["calibration_patients"] == val["patient_id"].nunique()
    assert 0.3 <= s["calibration_patients"] / split["patient_id"].nunique() <= 0.5
    assert s["calibration_share"] == 0.4 and s["seed"] == 3
    parent = json.loads((phantom_run / "model.json").read_text())
    assert s["parent_operating_point"] == parent["operating_point"]
    assert model["operating_point"]["target_sensitivity"] == parent["operating_point"]["target_sensitivity"]
    assert model["operating_point"]["score"] == parent["operating_point"]["score"]
    # OOD: the parent's training reference and threshold; drift is watched against the site's calibration part
    assert model["ood"]["threshold"] == parent["ood"]["threshold"] and "monitor_reference" in model["ood"]
    assert model["ood"]["val_images"] == s["calibration_images"]
    from cxrkit.run.monitor_log import monitor_id

    assert monitor_id(site_run) != monitor_id(phantom_run)  # same weights, other decisions: other records


def test_temperatures_are_refitted_on_the_calibration_part(site_run, phantom_run):
    from cxrkit.evaluate.calibration import fit_temperatures
    from cxrkit.run.data import load_run_data
    from cxrkit.run.model import RunModel, split_logits

    data = load_run_data(site_run)  # the site run's own folder: config + split.csv
    idx, logits = split_logits(RunModel.load(phantom_run), data, "val")
    want = fit_temperatures(logits, data.targets[idx])
    got = json.loads((site_run / "model.json").read_text())["calibration"]["temperatures"]
    assert np.allclose(got, want, rtol=1e-6)
    parent = json.loads((phantom_run / "model.json").read_text())["calibration"]["temperatures"]
    assert not np.allclose(got, parent)  # refitted, not copied


def test_before_and_after_equal_cxr_predict_on_the_sites_files(site_run, phantom_run, phantom_site, tmp_path):
    """The operating point reaches its target on the calibration part, and recalibration.json's
    before/after sensitivity and specificity are what each run's `cxr predict` flags give there."""
    truth = _truth(phantom_site)
    split = pd.read_csv(site_run / "split.csv", dtype=str).set_index("image_id")["split"]
    after = _predict(site_run, phantom_site, tmp_path / "after.csv")
    before = _predict(phantom_run, phantom_site, tmp_path / "before.csv")
    model = json.loads((site_run / "model.json").read_text())
    calib = split[split == "val"].index
    # the operating point's decision (studies out of distribution are also read, but not by this rule)
    flagged = (
        after.loc[calib, "triage_score"] >= model["operating_point"]["threshold"] - 1e-8
    )  # CSV: 9 digits
    abnormal = truth[calib]
    sens = flagged[abnormal].mean()
    assert sens >= model["operating_point"]["target_sensitivity"]
    assert sens == pytest.approx(model["operating_point"]["val_sensitivity"])
    rows = {r["metric"]: r for r in json.loads((site_run / "recalibration.json").read_text())["rows"]}
    held = split[split == "test"].index
    parent = json.loads((phantom_run / "model.json").read_text())["operating_point"]["threshold"]
    for side, pred, cut in (
        ("before", before, parent),
        ("after", after, model["operating_point"]["threshold"]),
    ):
        flagged = pred.loc[held, "triage_score"] >= cut - 1e-8
        abnormal = truth[held]
        assert rows["triage sensitivity"][side] == pytest.approx(flagged[abnormal].mean()), side
        assert rows["triage specificity"][side] == pytest.approx((~flagged[~abnormal]).mean()), side
    page = (site_run / "recalibration.html").read_text()
    for side in ("before", "after"):
        assert f"{rows['triage specificity'][side]:.3f}" in page
    assert str(model["validation"]["site"]["calibration_abnormal"]) in page
    e = json.loads((site_run / "eval-test" / "evaluation.json").read_text())
    assert e["run"] == str(site_run) and e["images"] == len(held)
    assert rows["macro ROC-AUC"]["after"] == e["macro_auc"]["value"]


def test_the_site_run_is_a_normal_run_folder(site_run, phantom_site, tmp_path):
    """cxr evaluate, export (ONNX agrees with PyTorch), serve and package take it; package keeps its
    origin."""
    from fastapi.testclient import TestClient

    from cxrkit.config import ServeConfig
    from cxrkit.run.model import RunModel
    from cxrkit.serve.app import create_app

    assert (
        main(["evaluate", str(site_run), "--split", "test", "--bootstrap", "0", "--out", str(tmp_path / "e")])
        == 0
    )
    assert main(["export", str(site_run), "--check", "40"]) == 0
    torch_csv = _predict(site_run, phantom_site, tmp_path / "t.csv", "--engine", "torch")
    onnx_csv = _predict(site_run, phantom_site, tmp_path / "o.csv", "--engine", "onnx")
    labels = json.loads((site_run / "model.json").read_text())["labels"]
    assert np.abs(torch_csv[labels].to_numpy() - onnx_csv[labels].to_numpy()).max() < 1e-4
    png = sorted((phantom_site / "images_001" / "images").iterdir())[0]
    with TestClient(create_app(RunModel.load(site_run), ServeConfig())) as client:
        r = client.post("/v1/predict", files={"file": (png.name, png.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["triage"]["flag"] == torch_csv.loc[png.name, "triage_flag"]
    before = json.loads((site_run / "model.json").read_text())
    assert main(["package", str(site_run)]) == 0
    again = json.loads((site_run / "model.json").read_text())
    assert again["validation"]["site"] == before["validation"]["site"]
    assert np.allclose(again["calibration"]["temperatures"], before["calibration"]["temperatures"])


def test_recalibration_refuses_what_it_cannot_do(phantom_run, phantom_site, site_run, tmp_path):
    from cxrkit.workflows.recalibrate import recalibrate_site

    nih = DataConfig(source="nih", path=str(phantom_site))
    with pytest.raises(FileExistsError, match="not empty"):
        recalibrate_site(phantom_run, nih, site_run, log=lambda m: None)
    with pytest.raises(ValueError, match=r"calibration part .* lacks abnormal or normal"):
        recalibrate_site(phantom_run, nih, tmp_path / "z", 0.005, cache_dir=str(tmp_path / "c"), log=print)
    with pytest.raises(ValueError, match="calibration-share 1"):
        recalibrate_site(phantom_run, nih, tmp_path / "x", 1.0, cache_dir=str(tmp_path / "c"), log=print)
    root = tmp_path / "kids"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for s in range(4):
            (root / cls / f"p{s}.png").write_bytes(png_bytes(chest_like(64, 64, seed=s)))
    with pytest.raises(ValueError, match=r"site has no labels for .*Effusion"):
        recalibrate_site(
            phantom_run,
            DataConfig(source="folder", path=str(root)),
            tmp_path / "y",
            cache_dir=str(tmp_path / "c"),
        )
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))
