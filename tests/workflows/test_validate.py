"""``cxr validate``: another site's labelled images scored at the run's stored decisions, and recalibrated.

The site in these tests is the phantom run's own test split written out as an NIH-style folder (PNG
files, a Data_Entry CSV): validating on it must reproduce ``cxr evaluate --split test`` exactly, and
its figures must equal an independent scikit-learn computation from ``cxr predict``'s CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like, png_bytes
from sklearn.metrics import roc_auc_score

from cxrkit.cli import main
from cxrkit.config import DataConfig, EvalConfig
from cxrkit.labels import NO_FINDING


@pytest.fixture
def site(phantom_site) -> Path:
    return phantom_site


def _validate(run: Path, site: Path, tmp_path: Path, **eval_options) -> dict:
    from cxrkit.workflows.validate import validate_run

    out = validate_run(
        run,
        DataConfig(source="nih", path=str(site)),
        EvalConfig(n_boot=200, samples=8, out=str(tmp_path / "v"), **eval_options),
        cache_dir=str(tmp_path / "cache"),
        log=lambda m: None,
    )
    return json.loads((out / "evaluation.json").read_text())


def test_validating_on_the_runs_own_test_images_reproduces_evaluate(
    phantom_run, phantom_eval, site, tmp_path
):
    v = _validate(phantom_run, site, tmp_path)
    e = json.loads((phantom_eval / "evaluation.json").read_text())
    assert v["split"] == "site" and v["images"] == e["images"] and v["patients"] == e["patients"]
    for key in ("macro_auc", "micro_auc", "macro_ap", "no_finding_auc", "summary"):
        assert v[key] == e[key], key
    assert [r["auc"] for r in v["per_label"]] == [r["auc"] for r in e["per_label"]]
    assert v["triage"]["site"] == e["triage"]["test"] and v["triage"]["ci"] == e["triage"]["ci"]
    assert v["calibration"]["ece_pooled"] == e["calibration"]["ece_pooled"]
    s = v["site"]
    assert s["missing_labels"] == [] and s["not_scored"] == [] and s["images_scored"] == e["images"]
    assert s["training_overlap"] == {"train": 0, "val": 0}
    t = e["triage"]["test"]
    tp = t["abnormal"] - t["missed"]
    assert s["ppv"] == pytest.approx(tp / t["flagged"]) and s["positives"] == t["abnormal"]
    assert len(s["missed"]) == t["missed"]
    names = {r["metric"] for r in s["comparison"]}
    assert {"macro ROC-AUC", "triage sensitivity", "triage specificity"} <= names
    for row in s["comparison"]:
        assert row["outside_ci"] == (not row["low"] <= row["training_site"] <= row["high"])
    page = (tmp_path / "v" / "report.html").read_text()
    assert "This site vs the training site" in page and "PPV" in page
    assert v["ood"] == e["ood"] and f"{v['ood']['flagged']:,} of {v['images']:,} images" in page


def test_site_figures_equal_sklearn_on_cxr_predicts_csv(phantom_run, site, tmp_path):
    v = _validate(
        phantom_run,
        site,
        tmp_path,
    )
    csv = tmp_path / "p.csv"
    assert main(["predict", str(phantom_run), str(site / "images_001" / "images"), "--out", str(csv)]) == 0
    pred = pd.read_csv(csv).sort_values("image_id").reset_index(drop=True)
    truth = pd.read_csv(site / "Data_Entry_2017.csv").sort_values("Image Index").reset_index(drop=True)
    assert pred["image_id"].tolist() == truth["Image Index"].tolist()
    for row in v["per_label"]:
        lab = row["label"]
        y = truth["Finding Labels"].str.split("|").map(lambda fs, lab=lab: float(lab in fs)).to_numpy()
        if 0 < y.sum() < len(y):
            assert row["auc"] == pytest.approx(roc_auc_score(y, pred[lab]), abs=1e-6), lab
    abnormal = truth["Finding Labels"] != NO_FINDING
    cut = json.loads((phantom_run / "model.json").read_text())["operating_point"]["threshold"]
    flagged = pred["triage_score"] >= cut - 1e-8  # the operating point's decision (CSV: 9 digits)
    t = v["triage"]["site"]
    assert t["sensitivity"] == pytest.approx(flagged[abnormal].mean())
    assert t["specificity"] == pytest.approx((~flagged[~abnormal]).mean())


def test_a_class_folder_site_reports_missing_labels_and_unscored_files(phantom_run, tmp_path):
    """Labels the site lacks are listed (never guessed); unreadable and blank files are rows, not gaps."""
    from cxrkit.workflows.validate import validate_run

    root = tmp_path / "kids"
    for cls, seeds in (("NORMAL", range(0, 12)), ("PNEUMONIA", range(12, 24))):
        (root / cls).mkdir(parents=True)
        for s in seeds:
            (root / cls / f"person{s}_x_{s}.png").write_bytes(png_bytes(chest_like(64, 64, seed=s)))
    (root / "NORMAL" / "blank.png").write_bytes(png_bytes(np.zeros((64, 64), np.uint8)))
    (root / "PNEUMONIA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    logs: list[str] = []
    out = validate_run(
        phantom_run,
        DataConfig(source="folder", path=str(root)),
        EvalConfig(n_boot=50, samples=4),
        cache_dir=str(tmp_path / "cache"),
        log=logs.append,
    )
    assert out == phantom_run / "validate-kids"
    s = json.loads((out / "evaluation.json").read_text())["site"]
    assert set(s["missing_labels"]) == set(json.loads((phantom_run / "model.json").read_text())["labels"]) - {
        NO_FINDING,
        "Pneumonia",
    }
    statuses = {r["image_id"]: r["status"] for r in s["not_scored"]}
    assert statuses == {"broken.png": "unreadable", "NORMAL/blank.png": "not assessable"}
    assert s["images_scored"] == 24
    page = (out / "report.html").read_text()
    assert "2 files were not scored" in page and "blank.png" in page
    assert any("labels the site lacks" in line for line in logs)


def test_a_site_without_any_of_the_runs_labels_is_refused(phantom_run, tmp_path):
    from cxrkit.workflows.validate import validate_run

    root = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        (root / cls / "a.png").write_bytes(png_bytes(chest_like(64, 64)))
    with pytest.raises(ValueError, match="none of the run's labels"):
        validate_run(phantom_run, DataConfig(source="folder", path=str(root)), cache_dir=str(tmp_path / "c"))


def test_plan_prints_the_wilson_sizes(capsys):
    assert main(["validate", "--plan", "--target-sensitivity", "0.95", "--ci-width", "0.05"]) == 0
    assert "304 labelled abnormal studies" in capsys.readouterr().out


def test_a_site_made_of_the_runs_own_validation_images_is_called_out(phantom_run, tmp_path):
    """Validating on images the run was tuned on is not a site validation: counted, logged, shown."""
    from conftest import export_test_split

    from cxrkit.workflows.validate import site_name, validate_run

    rows = export_test_split(phantom_run, tmp_path / "own-val", part="val")
    logs: list[str] = []
    out = validate_run(
        phantom_run,
        DataConfig(source="nih", path=str(tmp_path / "own-val")),
        EvalConfig(n_boot=0, samples=0, out=str(tmp_path / "v")),
        cache_dir=str(tmp_path / "cache"),
        log=logs.append,
    )
    s = json.loads((out / "evaluation.json").read_text())["site"]
    assert s["training_overlap"] == {"train": 0, "val": len(rows)}
    assert any(f"{len(rows):,} its validation images" in line for line in logs)
    assert f"{len(rows):,} its validation images" in (out / "report.html").read_text()
    assert site_name(tmp_path / "own-val" / "images_001" / "images") == "images_001-images"
    assert site_name(tmp_path / "own-val") == "own-val"


def test_a_sites_csv_of_paths_and_labels_validates_as_its_nih_folder_does(phantom_run, site, tmp_path):
    """The same images and labels given as a table (source: table) score exactly as the NIH folder."""

    entries = pd.read_csv(site / "Data_Entry_2017.csv")
    table = pd.DataFrame(
        {
            "path": f"{site.name}/images_001/images/" + entries["Image Index"],
            "labels": entries["Finding Labels"],
            "patient_id": entries["Patient ID"].astype(str),
        }
    )
    table.to_csv(site.parent / "site-table.csv", index=False)
    nih = _validate(phantom_run, site, tmp_path / "a")
    csv = _validate_table(phantom_run, site.parent / "site-table.csv", tmp_path / "b", 200)
    for key in ("macro_auc", "no_finding_auc", "triage"):
        assert csv[key] == nih[key], key
    assert csv["site"]["source"] == "table" and csv["patients"] == nih["patients"]


def test_a_site_without_any_abnormal_study_still_gets_its_report(phantom_run, site, tmp_path):
    """Every AUC is undefined there (one class): the report says so instead of failing."""

    entries = pd.read_csv(site / "Data_Entry_2017.csv")
    normal = entries[entries["Finding Labels"] == NO_FINDING]
    table = pd.DataFrame({"path": f"{site.name}/images_001/images/" + normal["Image Index"], "labels": ""})
    table.to_csv(site.parent / "normals.csv", index=False)
    m = _validate_table(phantom_run, site.parent / "normals.csv", tmp_path / "v", 50)
    assert m["images"] == len(normal) and m["triage"]["site"]["abnormal"] == 0
    assert (tmp_path / "v" / "report.html").is_file()


def _validate_table(run: Path, csv: Path, out: Path, n_boot: int) -> dict:
    """``validate_run`` on a CSV table site; its evaluation.json."""
    from cxrkit.workflows.validate import validate_run

    folder = validate_run(
        run,
        DataConfig(source="table", path=str(csv)),
        EvalConfig(n_boot=n_boot, samples=8, out=str(out)),
        cache_dir=str(out.parent / f"cache-{out.name}"),
        log=lambda m: None,
    )
    return json.loads((folder / "evaluation.json").read_text())
