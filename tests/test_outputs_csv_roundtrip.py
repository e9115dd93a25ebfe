"""CSVs cxrkit writes escaped (spreadsheet formulas) and reads back must give the ids exactly as written."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like, png_bytes

from cxrkit.outputs import csv_cell, read_csv, uncsv_cell, write_csv
from cxrkit.run import files

AWKWARD = ["-scan.png", "=cmd|x", "+1.png", "@a.png", "'=q.png", "''-z", "NA", "null", "plain.png", "\tt.png"]


def test_cells_escape_reversibly():
    for cell in [*AWKWARD, "'plain", "a=b", "", "'", "''"]:
        assert uncsv_cell(csv_cell(cell)) == cell
        assert not str(csv_cell(cell)).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert csv_cell("'=q") == "''=q" and csv_cell("'plain") == "'plain" and csv_cell(-1.5) == -1.5


def test_write_then_read_round_trips_awkward_ids_and_numbers(tmp_path):
    n = len(AWKWARD)
    frame = pd.DataFrame(
        {
            "image_id": AWKWARD,
            "patient_id": AWKWARD[::-1],
            "score": np.linspace(-1.5, 2.0, n),
            "rank": np.arange(-3, n - 3),
            "-note": ["=x", *AWKWARD[1:]],
        }
    )
    path = write_csv(tmp_path / "t.csv", frame, index=False)
    rows = list(csv.reader(path.open(newline="")))
    assert (
        rows[0][-1] == "'-note"
        and rows[1][0] == "'-scan.png"
        and rows[5][0] == "''=q.png"
        and rows[6][0] == "'''-z"
    )
    back = read_csv(path, text=["image_id", "patient_id", "-note"])
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["score"].dtype == np.float64 and back["rank"].dtype == np.int64, "numbers stay numbers"


def test_read_without_text_columns_keeps_only_empty_cells_missing(tmp_path):
    frame = pd.DataFrame({"image_id": ["NA", "-a", "b"], "p": [-0.25, np.nan, 1.0]})
    back = read_csv(write_csv(tmp_path / "t.csv", frame, index=False))
    assert back["image_id"].tolist() == ["NA", "-a", "b"] and back["p"].isna().tolist() == [
        False,
        True,
        False,
    ]


def test_text_index_and_names_are_escaped_and_read_back(tmp_path):
    frame = pd.DataFrame({"-v": [1.0, -2.0]}, index=pd.Index(["=A", "B"], name="@label"))
    path = write_csv(tmp_path / "t.csv", frame)
    assert path.read_text().splitlines()[:2] == ["'@label,'-v", "'=A,1.0"]
    pd.testing.assert_frame_equal(read_csv(path, index_col=0), frame, check_index_type=False)


def test_missing_text_column_is_named(tmp_path):
    path = write_csv(tmp_path / "t.csv", pd.DataFrame({"a": ["x"]}), index=False)
    with pytest.raises(ValueError, match=r"t\.csv: no column\(s\) \['image_id'\]"):
        read_csv(path, text=["image_id"])


def test_evaluation_figures_read_escaped_ids_back(tmp_path):
    from cxrkit.workflows.evaluate import evaluation_figures

    ids = ["-scan.png", "=y.png", "NA", "''-z"]
    labels = ["A"]
    pred = pd.DataFrame(
        {
            "image_id": ids,
            "patient_id": ["NA", "-p", "null", "q"],
            "true:A": [1.0, 0, 1, 0],
            "prob:A": [0.9, -0.0, 0.4, 0.1],
        }
    )
    write_csv(tmp_path / files.PREDICTIONS, pred, index=False)
    write_csv(tmp_path / files.SWEEP, pd.DataFrame({"threshold": [0.5], "sensitivity": [1.0]}), index=False)
    worklist = pd.DataFrame(
        {
            "rank": [1, 2],
            "image_id": ["NA", "-scan.png"],
            "patient_id": ["null", "NA"],
            "score": [np.nan, 0.5],
            "flag": ["unreadable", "normal"],
            "top_findings": ["=read manually", ""],
        }
    )
    write_csv(tmp_path / files.WORKLIST, worklist, index=False)
    meta = pd.DataFrame({"image_id": ["other.png", *ids[::-1]]})  # cache order differs from predictions
    images = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    data = SimpleNamespace(cache=SimpleNamespace(meta=meta, images=images))
    fig = evaluation_figures(tmp_path, tmp_path, data, labels)
    assert fig.image_ids == ids
    assert [int(fig.image(i)[0, 0]) for i in range(len(ids))] == [4, 3, 2, 1]
    assert fig.probs[:, 0].tolist() == [0.9, 0.0, 0.4, 0.1]
    assert fig.worklist["image_id"].tolist() == ["NA", "-scan.png"]
    assert fig.worklist["patient_id"].tolist() == ["null", "NA"]
    assert fig.worklist["top_findings"].tolist() == ["=read manually", ""]
    assert np.isnan(fig.worklist["score"].iat[0]) and fig.worklist["rank"].tolist() == [1, 2]

    data.cache.meta = meta.iloc[:3]
    with pytest.raises(ValueError, match=r"predictions\.csv: 2 image id\(s\) not in the run's cache"):
        evaluation_figures(tmp_path, tmp_path, data, labels)


def test_api_triage_returns_ids_as_named(phantom_run, tmp_path):
    import cxrkit

    names = ["-x.png", "=y.png", "NA.png"]
    paths = []
    for k, name in enumerate(names):
        (tmp_path / name).write_bytes(png_bytes(chest_like(64, 64, seed=k)))
        paths.append(tmp_path / name)
    table = cxrkit.load_run(phantom_run).triage(paths, out=tmp_path / "t", log=lambda m: None)
    assert sorted(table["image_id"]) == sorted(names)
    assert sorted(table["patient_id"]) == sorted(n[:-4] for n in names)
    assert table["score"].dtype == np.float64
