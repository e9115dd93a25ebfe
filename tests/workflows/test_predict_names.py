"""File names as attack surface: colliding names, non-ASCII names and spreadsheet formulas."""

from __future__ import annotations

import csv

import pytest
from conftest import chest_like, png_bytes

from cxrkit.cli import main

NAMES = ["a/x.png", "b/x.png", "c/ä.png", "c/ö.png", "d/=1+1.png", "d/@SUM(A1).png", "e/ok scan.png"]


def _inputs(root):
    for k, rel in enumerate(NAMES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(chest_like(64, 64, seed=k)))
    return root


@pytest.mark.slow
def test_colliding_names_get_one_overlay_each_and_csv_cells_are_inert(phantom_run, tmp_path):
    root = _inputs(tmp_path / "in")
    out = tmp_path / "x"
    assert main(["explain", str(phantom_run), str(root), "--top", "1", "--out", str(out)]) == 0
    overlays = [p for p in out.glob("*.png") if p.name != "grid.png"]
    assert len(overlays) == len(NAMES), sorted(p.name for p in overlays)
    assert all(p.name.isascii() for p in overlays)
    assert not list(tmp_path.glob("*.png")) and sorted(p.name for p in tmp_path.iterdir()) == ["in", "x"]

    pred = tmp_path / "p.csv"
    assert main(["predict", str(phantom_run), str(root), "--out", str(pred), "--quiet"]) == 0
    rows = list(csv.DictReader(pred.open(encoding="utf-8")))
    ids = {r["image_id"] for r in rows}
    assert {"'=1+1.png", "'@SUM(A1).png", "ä.png", "ö.png"} <= ids
    assert not any(v.startswith(("=", "+", "@")) for r in rows for v in r.values())


@pytest.mark.slow
def test_heatmap_names_stay_unique_across_prediction_chunks(phantom_run, tmp_path):
    """cxr predict --heatmaps works 256 inputs at a time: x.png in two chunks must not share a file."""
    from cxrkit.workflows.predict import predict_files

    root = _inputs(tmp_path / "in")
    predict_files(phantom_run, [root], heatmaps=tmp_path / "h", chunk=2, progress=False, log=lambda m: None)
    stems = {p.name.split("__")[0] for p in (tmp_path / "h").glob("*__*.png")}
    assert len(stems) == len(NAMES), sorted(stems)
