"""``cxr validate RUN ... --data A B ...``: the runs x datasets table, checked against each pair's
own validation and an independent scikit-learn computation from ``cxr predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import chest_like, png_bytes
from sklearn.metrics import roc_auc_score

from cxrkit.cli import main


def _kids(root: Path) -> Path:
    """A class-folder site with two of the run's labels (NORMAL = No Finding, PNEUMONIA)."""
    for cls, seeds in (("NORMAL", range(0, 14)), ("PNEUMONIA", range(14, 28))):
        (root / cls).mkdir(parents=True)
        for s in seeds:
            (root / cls / f"person{s}_x_{s}.png").write_bytes(png_bytes(chest_like(64, 64, seed=s)))
    return root


@pytest.fixture(scope="module")
def matrix(phantom_run, phantom_site, tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("matrix")
    other = base / "copies" / phantom_run.name  # the same weights under another path: a second run
    other.mkdir(parents=True)
    for name in ("best.pt", "model.json", "config.yaml", "split.csv", "ood.npz"):
        shutil.copy2(phantom_run / name, other / name)
    kids = _kids(base / "kids")
    out = base / "m"
    argv = ["validate", str(phantom_run), str(other), "--data", str(phantom_site), str(kids)]
    assert main([*argv, "--bootstrap", "40", "--out", str(out), "--cache-dir", str(base / "cache")]) == 0
    return out, kids, other


def test_each_cell_is_that_pairs_validation(matrix, phantom_site):
    out, _, _ = matrix
    rows = pd.read_csv(out / "matrix.csv")
    assert len(rows) == 4 and set(rows["dataset"]) == {"nih-site", "kids"}
    for r in rows.itertuples():
        pair = next(
            p
            for p in out.iterdir()
            if p.is_dir() and p.name.endswith("__" + r.dataset) and r.run.replace("/", "-") in p.name
        )
        m = json.loads((pair / "evaluation.json").read_text())
        assert r.macro_auc == pytest.approx(m["macro_auc"]["value"])
        assert r.macro_auc_low == pytest.approx(m["macro_auc"]["low"])
        assert r.sensitivity == pytest.approx(m["triage"]["site"]["sensitivity"])
        assert r.specificity == pytest.approx(m["triage"]["site"]["specificity"])
    same = rows.groupby("dataset")["macro_auc"].nunique()
    assert (same == 1).all()  # the two runs share weights: the same figures on each dataset


def test_the_kids_cells_cover_the_shared_labels_only_and_equal_sklearn(matrix, phantom_run, tmp_path):
    out, kids, _ = matrix
    rows = pd.read_csv(out / "matrix.csv").set_index(["run", "dataset"])
    labels = pd.read_csv(out / "per_label.csv")
    mine = labels[labels["dataset"] == "kids"]
    assert set(mine["label"]) == {"No Finding", "Pneumonia"}
    csv = tmp_path / "p.csv"
    assert main(["predict", str(phantom_run), str(kids), "--out", str(csv)]) == 0
    pred = pd.read_csv(csv)
    y = pred["source"].str.contains("PNEUMONIA").astype(float)
    auc = roc_auc_score(y, pred["Pneumonia"])
    run = next(r for r, d in rows.index if d == "kids")
    assert set(rows.loc[(run, "kids"), "shared_labels"].split(";")) == {"No Finding", "Pneumonia"}
    assert rows.loc[(run, "kids"), "macro_auc"] == pytest.approx(auc, abs=1e-6)  # the one shared finding
    assert rows.loc[(run, "kids"), "no_finding_auc"] == pytest.approx(
        roc_auc_score(1 - y, pred["No Finding"]), abs=1e-6
    )


def test_markdown_and_html_show_every_cell(matrix):
    out, _, _ = matrix
    md = (out / "matrix.md").read_text()
    rows = pd.read_csv(out / "matrix.csv")
    assert "| run | nih-site | kids |" in md
    for r in rows.itertuples():
        assert f"{r.macro_auc:.3f} [{r.macro_auc_low:.3f}, {r.macro_auc_high:.3f}]" in md
    page = (out / "matrix.html").read_text()
    assert "Cross-dataset matrix" in page and f"{rows.macro_auc[0]:.3f}" in page


def test_a_yaml_matrix_keeps_going_past_a_dataset_without_shared_labels(phantom_run, phantom_site, tmp_path):
    pets = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (pets / cls).mkdir(parents=True)
        (pets / cls / "a.png").write_bytes(png_bytes(chest_like(64, 64)))
    spec = tmp_path / "m.yaml"
    spec.write_text(f"runs: [{phantom_run}]\ndata:\n  - {pets}\n  - {{path: {phantom_site}, source: nih}}\n")
    out = tmp_path / "m"
    assert (
        main(
            [
                "validate",
                "--matrix",
                str(spec),
                "--bootstrap",
                "0",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    rows = pd.read_csv(out / "matrix.csv", keep_default_na=False).set_index("dataset")
    assert "none of the run's labels" in rows.loc["pets", "note"]
    assert rows.loc["nih-site", "note"] == "" and float(rows.loc["nih-site", "macro_auc"]) > 0.5
    md = (out / "matrix.md").read_text()
    assert "| phantom | – | " in md and "phantom on pets: " in md


def test_a_run_given_twice_and_a_malformed_yaml_are_refused(phantom_run, phantom_site, tmp_path, capsys):
    assert main(["validate", str(phantom_run), str(phantom_run), "--data", str(phantom_site)]) == 2
    assert "the same run is given twice" in capsys.readouterr().err
    spec = tmp_path / "m.yaml"
    for text in (f"runs: [{phantom_run}]\ndata: {phantom_site}\n", f"runs: [{phantom_run}]\ndata: [42]\n"):
        spec.write_text(text)
        assert main(["validate", "--matrix", str(spec)]) == 2
        err = capsys.readouterr().err
        assert "m.yaml" in err and "internal error" not in err
