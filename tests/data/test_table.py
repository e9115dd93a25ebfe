"""``data.source: table``: a site's CSV of image paths and labels (PNG, JPEG or DICOM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import chest_like, png_bytes, write_dicom

from cxrkit.data import build_dataset, detect_source
from cxrkit.labels import LABELS, NO_FINDING, UnknownLabelError


def _files(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    for k in range(3):
        (root / "img" / f"a{k}.png").write_bytes(png_bytes(chest_like(48, 48, seed=k)))
    write_dicom(root / "img" / "d.dcm", chest_like(48, 48, seed=9))  # PatientID "TEST"
    return root


def _csv(root: Path, text: str) -> Path:
    path = root / "site.csv"
    path.write_text(text)
    return path


def test_a_labels_column_reads_like_nih_finding_labels(tmp_path):
    root = _files(tmp_path)
    csv = _csv(
        root,
        "path,labels,patient_id,age,sex\n"
        "img/a0.png,Effusion|cardiomegaly,p1,61,F\n"
        "img/a1.png,normal,p1,62,F\n"
        f"{root / 'img' / 'a2.png'},,,40,M\n"
        "img/d.dcm,Pneumonia,,,\n",
    )
    assert detect_source(csv) == "table"
    ds = build_dataset({"source": "table", "path": str(csv)})
    assert ds.labels == tuple(LABELS) and len(ds) == 4
    t = ds.meta[list(LABELS)].to_numpy()
    assert not np.isnan(t).any()  # the labels form: every label known
    assert t[0, LABELS.index("Effusion")] == 1 and t[0, LABELS.index("Cardiomegaly")] == 1
    assert t[1, LABELS.index(NO_FINDING)] == 1 and t[2, LABELS.index(NO_FINDING)] == 1 and t[0].sum() == 2
    assert ds.meta["patient_id"].tolist() == ["p1", "p1", "a2", "TEST"]  # column, file name, DICOM tag
    assert ds.meta["patient_source"].tolist() == ["csv", "csv", "file name", "dicom"]
    assert ds.meta["age"].tolist()[:3] == [61, 62, 40] and np.isnan(ds.meta["age"].iat[3])
    img = ds.load_image(3)
    assert img.dtype == np.uint8 and img.shape == (48, 48)


def test_label_columns_keep_unknowns_unknown_and_canonicalise_names(tmp_path):
    root = _files(tmp_path)
    csv = _csv(root, "path,NORMAL,pneumonia,Fracture\nimg/a0.png,1,0,\nimg/a1.png,0,1,-1\nimg/a2.png,,1,1\n")
    ds = build_dataset({"source": "table", "path": str(csv)})
    assert ds.labels == (NO_FINDING, "Pneumonia", "Fracture")  # a label of the site's own is kept
    t = ds.meta[list(ds.labels)].to_numpy()
    np.testing.assert_array_equal(np.isnan(t), [[0, 0, 1], [0, 0, 1], [1, 0, 0]])
    assert t[1, 1] == 1 and t[2, 2] == 1


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("file,labels\nimg/a0.png,Effusion\n", ValueError, "no 'path' column"),
        ("path,labels\nimg/a0.png,Efusion\n", UnknownLabelError, r"row 2.*did you mean 'Effusion'"),
        ("path,Effusion\nimg/a0.png,1\nimg/a1.png,yes\n", ValueError, r"row 3, column 'Effusion': 'yes'"),
        ("path,Effusion,effusion\nimg/a0.png,1,1\n", ValueError, "all mean Effusion"),
        ("path,Effusion\nimg/a0.png,1\nimg/a0.png,0\n", ValueError, "listed twice"),
        ("path\nimg/a0.png\n", ValueError, "no label columns"),
        ("path,Effusion\n", ValueError, "no rows"),
        ("path,labels\nimg/a0.png,Pneumonia|No finding\n", ValueError, "row 2: .* and No Finding"),
        ("path,Efusion\nimg/a0.png,1\n", UnknownLabelError, "column 'Efusion'.*did you mean 'Effusion'"),
    ],
)
def test_a_malformed_table_names_the_file_and_the_problem(tmp_path, text, error, match):
    root = _files(tmp_path)
    csv = _csv(root, text)
    with pytest.raises(error, match=match) as info:
        build_dataset({"source": "table", "path": str(csv)})
    assert "site.csv" in str(info.value)


def test_a_missing_image_is_listed_as_unreadable_by_the_cache_not_dropped(tmp_path):
    from cxrkit.data.cache import CachedDataset, prepare_cache

    root = _files(tmp_path)
    csv = _csv(root, "path,Effusion\nimg/a0.png,1\nimg/gone.png,0\nimg/a1.png,0\n")
    ds = build_dataset({"source": "table", "path": str(csv)})
    res = prepare_cache(ds, tmp_path / "cache", size=32, progress=False)
    assert len(CachedDataset(tmp_path / "cache").meta) == 2
    assert [Path(f).name for f, _ in res.failures] == ["gone.png"]
