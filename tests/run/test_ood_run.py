"""A run's OOD reference at the point of use: stored and checked with model.json, the same score on
every engine and path, real X-rays flagged for a phantom-trained run (never "normal"), DICOM header
checks, and `cxr package` adding the reference to a run without one."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import phantom_image, png_bytes, shared_path, write_dicom

from cxrkit.cli import main
from cxrkit.run.model import RunModel


def test_the_reference_is_stored_checked_and_flags_about_one_percent_of_the_test_split(phantom_run):
    from cxrkit.run.data import load_run_data

    section = json.loads((phantom_run / "model.json").read_text())["ood"]
    blob = (phantom_run / section["file"]).read_bytes()
    assert section["sha256"] == hashlib.sha256(blob).hexdigest() and section["method"] == "mahalanobis"
    assert section["val_flag_rate"] == pytest.approx(0.01, abs=0.01)
    run = RunModel.load(phantom_run, "cpu")
    data = load_run_data(phantom_run)
    test = np.asarray(data.cache.images[np.sort(data.partition["test"])])
    z, f = run.outputs(test)
    flagged = ~run.assess_ood(f, z).in_distribution
    assert flagged.mean() <= 0.05  # in-distribution false flags (the threshold aims at 1%)


def test_a_changed_reference_is_refused(phantom_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(phantom_run, copy)
    (copy / "ood.npz").write_bytes((copy / "ood.npz").read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"ood\.npz does not match model\.json"):
        RunModel.load(copy, "cpu")
    (copy / "ood.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"ood\.npz is missing"):
        RunModel.load(copy, "cpu")


def test_the_same_ood_score_from_torch_onnx_predict_and_the_api(exported_run, tmp_path):
    from fastapi.testclient import TestClient

    from cxrkit.config import ServeConfig
    from cxrkit.serve.app import create_app

    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(4):
        (folder / f"p{k}.png").write_bytes(png_bytes(phantom_image(k)))
    for sample in sorted(shared_path("data", "samples").iterdir())[:2]:
        shutil.copy(sample, folder / sample.name)
    tables = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / f"{engine}.csv"
        assert (
            main(
                ["predict", str(exported_run), str(folder), "--engine", engine, "--out", str(out), "--quiet"]
            )
            == 0
        )
        tables[engine] = pd.read_csv(out).set_index("image_id")
    torch_s, onnx_s = tables["torch"]["ood_score"], tables["onnx"]["ood_score"][tables["torch"].index]
    assert np.abs(torch_s - onnx_s).max() <= 1e-4
    assert (tables["torch"]["triage_flag"] == tables["onnx"]["triage_flag"][tables["torch"].index]).all()
    run = RunModel.load(exported_run, "cpu")
    api = run.predict(sorted(folder.iterdir())).set_index("image_id")
    assert np.abs(api["ood_score"] - torch_s[api.index]).max() <= 1e-6
    with TestClient(create_app(run, ServeConfig())) as client:
        for name in torch_s.index[:3]:
            body = client.post(
                "/v1/predict", files={"file": (name, (folder / name).read_bytes(), "image/png")}
            ).json()
            assert body["ood"]["score"] == pytest.approx(torch_s[name], abs=1e-4)
            assert body["triage"]["flag"] == tables["torch"].loc[name, "triage_flag"]


def test_real_x_rays_are_out_of_distribution_for_a_phantom_run_and_never_normal(phantom_run, tmp_path):
    samples = sorted(shared_path("data", "samples").iterdir())
    run = RunModel.load(phantom_run, "cpu")
    table = run.predict(samples)
    assert (table["error"] == "").all()
    assert (table["triage_flag"] == "out of distribution").all() and (table["ood_score"] > 1).all()
    assert table["ood_note"].str.contains("read manually").all()
    folder = tmp_path / "t"
    assert main(["triage", str(phantom_run), *map(str, samples), "--out", str(folder)]) == 0
    w = pd.read_csv(folder / "worklist.csv")
    assert set(w["flag"]) == {"out of distribution"} and "normal" not in set(w["flag"])
    assert w["top_findings"].str.contains("read manually").all() and w["score"].notna().all()
    assert len(json.loads((folder / "triage.json").read_text())["out_of_distribution"]) == len(samples)


def _dicom(path, image, **tags):
    write_dicom(path, image)
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


def test_dicom_headers_that_do_not_fit_the_training_population_are_flagged(phantom_run, tmp_path):
    """The phantom run knows ages 18-89 and views AP/PA: a child, a lateral and a knee are read manually."""
    run = RunModel.load(phantom_run, "cpu")
    image = next(
        phantom_image(k)
        for k in range(20)
        if run.predict(phantom_image(k))["in_distribution"].iloc[0]  # an image the score alone accepts
    )
    files = {
        "adult.dcm": {"PatientAge": "045Y", "ViewPosition": "PA", "BodyPartExamined": "CHEST"},
        "child.dcm": {"PatientAge": "004Y", "ViewPosition": "PA"},
        "lateral.dcm": {"PatientAge": "050Y", "ViewPosition": "LL"},
        "knee.dcm": {"BodyPartExamined": "KNEE"},
    }
    paths = [_dicom(tmp_path / name, image, **tags) for name, tags in files.items()]
    table = run.predict(paths).set_index("image_id")
    assert table.loc["adult.dcm", "in_distribution"] == True  # noqa: E712 (an object column)
    assert "patient age 4 y is outside" in table.loc["child.dcm", "ood_note"]
    assert "view LL is not one the model was trained on" in table.loc["lateral.dcm", "ood_note"]
    assert "body part KNEE, not chest" in table.loc["knee.dcm", "ood_note"]
    assert (table.loc[["child.dcm", "lateral.dcm", "knee.dcm"], "triage_flag"] == "out of distribution").all()


def test_package_adds_the_reference_to_a_run_without_one(phantom_run, tmp_path):
    copy = tmp_path / "old-run"
    shutil.copytree(phantom_run, copy)
    doc = json.loads((copy / "model.json").read_text())
    original = doc.pop("ood")
    (copy / "model.json").write_text(json.dumps(doc))
    (copy / "ood.npz").unlink()
    old = RunModel.load(copy, "cpu").predict(phantom_image(0))
    assert np.isnan(old["ood_score"].iloc[0]) and old["in_distribution"].iloc[0] == True  # noqa: E712
    assert main(["package", str(copy)]) == 0
    again = json.loads((copy / "model.json").read_text())["ood"]
    assert again["threshold"] == pytest.approx(original["threshold"], rel=1e-9)
    assert np.isfinite(RunModel.load(copy, "cpu").predict(phantom_image(0))["ood_score"].iloc[0])
