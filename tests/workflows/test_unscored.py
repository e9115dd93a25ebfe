"""Triage never lies: a study that cannot be scored heads the worklist; nothing reads as normal by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like, phantom_image, png_bytes, write_dicom

from cxrkit.cli import main


def _mixed_folder(root: Path) -> dict[str, str]:
    """Three good images and one of each kind of study that must not be scored; name -> expected status."""
    root.mkdir()
    for k in range(3):
        (root / f"good{k}.png").write_bytes(png_bytes(phantom_image(k)))  # in distribution for phantom_run
    good = png_bytes(chest_like(64, 64))
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    write_dicom(root / "nopixels.dcm", None)
    (root / "tiny.png").write_bytes(png_bytes(np.full((1, 1), 128, np.uint8)))
    (root / "thumb.png").write_bytes(png_bytes(chest_like(20, 200)))
    return {
        "truncated.png": "unreadable",
        "empty.png": "unreadable",
        "text.png": "unreadable",
        "nopixels.dcm": "unreadable",
        "tiny.png": "not assessable",
        "thumb.png": "not assessable",
    }


@pytest.mark.slow
def test_triage_puts_every_unscored_study_on_top_and_exits_non_zero(phantom_run, tmp_path, capsys):
    expected = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["triage", str(phantom_run), str(tmp_path / "in"), "--out", str(out)])
    assert rc != 0, "a worklist with unreadable studies must not look like a clean success"
    wl = pd.read_csv(out / "worklist.csv", dtype=str, keep_default_na=False)
    assert len(wl) == 3 + len(expected), "no study may vanish from the worklist"
    top = wl.iloc[: len(expected)]
    assert dict(zip(top["image_id"], top["flag"], strict=True)) == expected
    assert top["top_findings"].str.endswith("read manually").all()
    assert all(
        n.startswith(f"{expected[i]}: ") for i, n in zip(top["image_id"], top["top_findings"], strict=True)
    )
    assert set(wl.iloc[len(expected) :]["flag"]) <= {"abnormal", "normal"}
    assert wl["rank"].astype(int).tolist() == list(range(1, len(wl) + 1))
    summary = json.loads((out / "triage.json").read_text())
    assert summary["images"] == len(wl) and summary["scored"] == 3
    assert {r["image_id"]: r["status"] for r in summary["not_scored"]} == expected
    assert "NOT scored" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_marks_unscored_rows_and_exits_non_zero(phantom_run, tmp_path):
    expected = _mixed_folder(tmp_path / "in")
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(phantom_run), str(tmp_path / "in"), "--out", str(out), "--quiet"])
    assert rc == 1
    table = pd.read_csv(out, dtype={"image_id": str, "error": str}, keep_default_na=False)
    assert len(table) == 3 + len(expected)
    bad = table[table["image_id"].isin(expected)]
    assert dict(zip(bad["image_id"], bad["triage_flag"], strict=True)) == expected
    assert bad["error"].str.contains("read manually").all() and bad["triage_score"].eq("").all()
    assert (table.loc[~table["image_id"].isin(expected), "error"] == "").all()
    assert set(table["image_id"][: len(expected)]) == set(expected), "unscored studies must come first"
    assert table["image_id"][len(expected) :].tolist() == ["good0.png", "good1.png", "good2.png"]


@pytest.mark.slow
@pytest.mark.parametrize("target", [0, -0.1, 1.5, float("nan")])
def test_impossible_target_sensitivity_is_refused_everywhere(phantom_run, tmp_path, capsys, target):
    from cxrkit import load_run
    from cxrkit.config import EvalConfig, TriageConfig

    rc = main(["triage", str(phantom_run), "--target-sensitivity", str(target), "--out", str(tmp_path / "t")])
    assert rc == 2 and "target" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    with pytest.raises(ValueError, match="target"):
        load_run(phantom_run).triage(tmp_path, target_sensitivity=target, out=tmp_path / "api")
    with pytest.raises(ValueError, match="target"):
        EvalConfig(target_sensitivity=target)
    with pytest.raises(ValueError, match="target"):
        TriageConfig(target_sensitivity=target)


def test_unreached_target_is_reported_not_claimed():
    """Validation without a single abnormal study cannot show any sensitivity: the point says not reached."""
    from cxrkit.run.package import choose_operating_point

    labels = ["No Finding", "Effusion"]
    y = np.array([[1.0, 0.0]] * 20)  # all normal
    p = np.random.default_rng(0).random((20, 2))
    point = choose_operating_point(labels, y, p, 0.95)
    assert point.reached is False
    y[:5] = [0.0, 1.0]
    p[:5] = [0.1, 0.9]
    assert choose_operating_point(labels, y, p, 0.95).reached is True


def test_predict_lists_unscored_rows_first_then_the_rest_in_input_order(tmp_path):
    """The fast check of the rule (an untrained run): what needs a manual read heads predictions.csv."""
    from conftest import make_untrained_run

    from cxrkit.workflows.predict import predict_files

    run = make_untrained_run(tmp_path / "run")
    names = ["a-good.png", "b-blank.png", "c-good.png", "d-empty.png", "e-good.png"]
    for k, name in enumerate(names):
        data = png_bytes(chest_like(64, 64, seed=k))
        data = png_bytes(np.zeros((64, 64), np.uint8)) if "blank" in name else data
        (tmp_path / name).write_bytes(b"" if "empty" in name else data)
    paths = [tmp_path / n for n in names]
    table = predict_files(run, paths, out=None, progress=False, chunk=2, log=lambda m: None)
    order = ["b-blank.png", "d-empty.png", "a-good.png", "c-good.png", "e-good.png"]
    assert table["image_id"].tolist() == order
    assert table["triage_flag"].tolist()[:2] == ["not assessable", "unreadable"]


def test_predict_files_writes_the_table_and_sums_it_up(tmp_path):
    """Fast checks of predict_files: the CSV it writes, its index, its summary line, the modality default."""
    import pydicom
    from conftest import make_untrained_run

    from cxrkit.outputs import read_csv
    from cxrkit.workflows.predict import predict_files, summary_line

    run = make_untrained_run(tmp_path / "run")
    for k in range(3):
        (tmp_path / f"g{k}.png").write_bytes(png_bytes(chest_like(64, 64, seed=k)))
    dcm = write_dicom(tmp_path / "m.dcm", chest_like(64, 64).astype(np.uint16))
    ds = pydicom.dcmread(dcm)
    del ds.Modality
    ds.save_as(dcm)
    paths = [tmp_path / "g0.png", dcm, tmp_path / "g1.png", tmp_path / "g2.png"]
    out = tmp_path / "sub" / "p.csv"
    table = predict_files(run, paths, out=out, progress=False, chunk=3, log=lambda m: None)
    assert table.index.tolist() == [0, 1, 2, 3] and table["image_id"].tolist()[0] == "m.dcm"
    written = read_csv(out, text=("source", "image_id", "error", "triage_flag", "top_findings"))
    assert written["image_id"].tolist() == table["image_id"].tolist()
    np.testing.assert_allclose(
        written["triage_score"].to_numpy()[1:], table["triage_score"].to_numpy()[1:], rtol=1e-8
    )
    flagged = int((table["triage_flag"] == "abnormal").sum())
    assert summary_line(table) == (
        f"3 of 4 images scored, {flagged:,} flagged abnormal; 1 NOT scored (unreadable or not assessable: "
        "read them manually; see the error column)"
    )
    assert summary_line(table.iloc[1:]) == f"3 of 3 images scored, {flagged:,} flagged abnormal"
    accepted = predict_files(run, [dcm], progress=False, accept_missing_modality=True, log=lambda m: None)
    assert accepted["error"].tolist() == [""]


def test_triage_of_new_images_counts_what_it_scored_and_what_it_did_not(tmp_path):
    from conftest import make_untrained_run

    from cxrkit.workflows.triage import triage

    run = make_untrained_run(tmp_path / "run")
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(64, 64)))
    (tmp_path / "blank.png").write_bytes(png_bytes(np.zeros((64, 64), np.uint8)))
    for bad in (0.0, 1.01, -0.5):
        with pytest.raises(ValueError, match="expected a value in"):
            triage(run, [tmp_path / "good.png"], target=bad, out=tmp_path / "never", log=lambda m: None)
    assert not (tmp_path / "never").exists()
    logs: list[str] = []
    folder = triage(run, [tmp_path / "good.png", tmp_path / "blank.png"], out=tmp_path / "t", log=logs.append)
    summary = json.loads((folder / "triage.json").read_text())
    assert (summary["images"], summary["scored"]) == (2, 1) and len(summary["not_scored"]) == 1
    assert summary["flagged"] in (0, 1) and summary["target_reached_on_validation"] is True
    assert any("1 studies NOT scored" in line for line in logs)
    clean = triage(run, [tmp_path / "good.png"], target=0.95, out=tmp_path / "c", log=logs.append)
    assert json.loads((clean / "triage.json").read_text())["images"] == 1
    assert pd.read_csv(clean / "worklist.csv")["rank"].tolist() == [1]


def test_predict_files_bar_csv_index_and_heatmaps(tmp_path, capsys):
    """What a user of ``cxr predict`` sees: a bar only when asked, a CSV without an index column, one
    heatmap per scored image and no grid (a folder of thousands would make it unreadable)."""
    from conftest import make_untrained_run

    from cxrkit.workflows.predict import predict_files

    run = make_untrained_run(tmp_path / "run")
    images = tmp_path / "in"
    images.mkdir()
    for k in range(2):
        (images / f"g{k}.png").write_bytes(png_bytes(chest_like(64, 64, seed=k)))
    (images / "blank.png").write_bytes(png_bytes(np.zeros((64, 64), np.uint8)))
    out, maps = tmp_path / "p.csv", tmp_path / "maps"
    predict_files(run, [images], out=out, heatmaps=maps, progress=False, log=lambda m: None)
    assert "predict" not in capsys.readouterr().err
    assert pd.read_csv(out).columns[0] == "source"  # no unnamed index column in front
    explained = {p.name.split("__")[0] for p in maps.iterdir()}  # one overlay per image and finding
    assert explained == {"g0", "g1"}  # the blank one is not explained, and no grid.png
    predict_files(run, [images / "g0.png"], progress=True, log=lambda m: None)
    assert "predict" in capsys.readouterr().err


def test_triage_of_new_images_defaults_and_edges(tmp_path):
    """Its own folder by default, a target of exactly 1 in range, Modality required by default, and a
    worklist of only unscored studies counted right."""
    import pydicom
    from conftest import make_untrained_run

    from cxrkit.workflows.triage import triage

    run = make_untrained_run(tmp_path / "run")
    dcm = write_dicom(tmp_path / "m.dcm", chest_like(64, 64).astype(np.uint16))
    ds = pydicom.dcmread(dcm)
    del ds.Modality
    ds.save_as(dcm)
    from cxrkit.run.package import NeedsValidation

    with pytest.raises(NeedsValidation, match="sensitivity 1 "):  # in range: only its data is missing
        triage(run, [dcm], target=1.0, log=lambda m: None)
    logs: list[str] = []
    folder = triage(run, [dcm], log=logs.append)
    assert folder == tmp_path / "run" / "triage-images"
    summary = json.loads((folder / "triage.json").read_text())
    assert (summary["images"], summary["scored"], summary["flagged"]) == (1, 0, 0)
    assert summary["not_scored"][0]["status"] == "not assessable"
    wl = pd.read_csv(folder / "worklist.csv")
    assert wl.columns[0] == "rank" and wl["flag"].tolist() == ["not assessable"]
    assert any("1 studies NOT scored" in line for line in logs)
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(64, 64)))
    logs.clear()
    triage(run, [tmp_path / "good.png"], out=tmp_path / "clean", log=logs.append)
    assert not any("NOT scored" in line for line in logs)
