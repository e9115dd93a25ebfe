"""No patient crosses a split: DICOM PatientIDs, saved splits on resume and re-evaluation, clean starts."""

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chest_like, png_bytes, write_dicom

from cxrkit.cli import main
from cxrkit.config import build_run_config
from cxrkit.data.folder import LabelledFolderDataset
from cxrkit.data.splits import (
    DIGEST,
    PatientLeakError,
    load_split_manifest,
    patient_split,
    save_split_manifest,
)
from cxrkit.run.data import load_run_data
from cxrkit.training import loop
from cxrkit.training.loop import fit

P7 = {  # one patient, three files whose names share nothing, in both classes
    "PNEUMONIA/scan_a.dcm": 1,
    "PNEUMONIA/IMG0003.dcm": 2,
    "NORMAL/z9_followup.dcm": 3,
}


def dicom(path: Path, patient: str | None, seed: int, issuer: str | None = None) -> Path:
    """A 40 px DICOM with PatientID ``patient`` (absent when None) and optionally IssuerOfPatientID."""
    import pydicom

    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(path, chest_like(40, 40, seed))
    ds = pydicom.dcmread(path)
    del ds.PatientID
    if patient is not None:
        ds.PatientID = patient
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.save_as(path)
    return path


@pytest.fixture
def dicom_folder(tmp_path: Path) -> Path:
    """NORMAL/PNEUMONIA DICOMs: patient HOSP/P7 under three unrelated names, 24 other patients of two each."""
    root = tmp_path / "dicoms"
    for name, seed in P7.items():
        dicom(root / name, "P7", seed, issuer="HOSP")
    for k in range(24):
        cls = "PNEUMONIA" if k % 2 else "NORMAL"
        for j in range(2):
            dicom(root / cls / f"{k:03d}-{j}-{(k * 7919 + j) % 1000}.dcm", f"PAT{k}", 100 + 2 * k + j)
    return root


def test_dicom_patient_is_the_patient_id_tag_not_the_file_name(dicom_folder):
    ds = LabelledFolderDataset(dicom_folder)
    meta = ds.meta.set_index("image_id")
    assert set(meta.loc[list(P7), "patient_id"]) == {"HOSP/P7"}
    assert (ds.meta["patient_source"] == "dicom").all()
    assert ds.meta["patient_id"].nunique() == 25
    for seed in range(20):
        split = patient_split(ds.meta["patient_id"], ds.targets(), seed=seed)
        where = {name for name, idx in split.items() for i in idx if ds.meta["image_id"].iat[i] in P7}
        assert len(where) == 1, (seed, where)


def test_issuer_separates_ids_and_a_missing_patient_id_falls_back_to_the_name(tmp_path, caplog):
    root = tmp_path / "mixed"
    dicom(root / "A" / "x1.dcm", "42", 1, issuer="NORTH")
    dicom(root / "A" / "x2.dcm", "42", 2, issuer="SOUTH")
    dicom(root / "B" / "person9005_virus_1.dcm", None, 3)
    dicom(root / "B" / "person9005_virus_2.dcm", "  ", 4)  # blank: no PatientID either
    (root / "B" / "person9005_bacteria_3.png").write_bytes(png_bytes(chest_like(40, 40, 5)))
    with caplog.at_level(logging.WARNING, logger="cxrkit.data.folder"):
        ds = LabelledFolderDataset(root)
    meta = ds.meta.set_index("image_id")
    got = {i: (meta.at[i, "patient_id"], meta.at[i, "patient_source"]) for i in meta.index}
    assert got["A/x1.dcm"] == ("NORTH/42", "dicom") and got["A/x2.dcm"] == ("SOUTH/42", "dicom")
    assert got["B/person9005_virus_1.dcm"] == ("person9005", "file name (DICOM without PatientID)")
    assert got["B/person9005_virus_2.dcm"] == ("person9005", "file name (DICOM without PatientID)")
    assert got["B/person9005_bacteria_3.png"] == ("person9005", "file name")
    assert "2 of 4 DICOM files have no readable PatientID" in caplog.text


def meta_frame(n_patients: int = 12) -> pd.DataFrame:
    ids = [f"p{p}_{k}.png" for p in range(n_patients) for k in range(2)]
    return pd.DataFrame({"image_id": ids, "patient_id": [i.split("_")[0] for i in ids]})


def three_way(meta: pd.DataFrame) -> dict[str, np.ndarray]:
    return patient_split(
        meta["patient_id"], np.zeros((len(meta), 0)), {"train": 0.5, "val": 0.25, "test": 0.25}
    )


def test_an_edited_split_file_with_a_patient_in_two_splits_is_refused(tmp_path):
    meta = meta_frame()
    split = three_way(meta)
    path = save_split_manifest(tmp_path / "split.csv", meta, split)
    man = pd.read_csv(path, dtype=str)
    row = man.index[man["split"] == "train"][0]
    man.loc[row, "split"] = "test"  # one image of a training patient moved to test
    man.to_csv(path, index=False)
    patient = man.loc[row, "patient_id"]
    with pytest.raises(ValueError, match=rf"patient {patient} is in both '(train|test)' and '(train|test)'"):
        load_split_manifest(path, meta)


def test_a_split_leaking_by_the_real_patient_key_is_refused_on_loading(tmp_path):
    meta = meta_frame()
    by_name = meta.assign(patient_id=meta["image_id"])  # an old rule: every file its own patient
    split = {"train": np.arange(0, 24, 2), "test": np.arange(1, 24, 2)}  # leak-free by that rule only
    path = save_split_manifest(tmp_path / "split.csv", by_name, split)
    assert load_split_manifest(path, by_name, report=lambda m: None)["train"].tolist() == list(
        range(0, 24, 2)
    )
    with pytest.raises(
        PatientLeakError, match="12 patients are in two splits: patient p0 in 'train' and 'test'"
    ):
        load_split_manifest(path, meta, report=lambda m: None)
    assert issubclass(PatientLeakError, ValueError)  # cxr reports it as a data error (exit 2)


@pytest.mark.parametrize(
    "tricky", ["-neg.png", "=cmd|x", "+1.png", "@a.png", "'=q.png", "''-z", "NA", "null"]
)
def test_ids_a_spreadsheet_would_run_survive_the_round_trip(tmp_path, tricky):
    meta = meta_frame()
    meta.loc[0, "image_id"] = tricky
    meta.loc[[0, 1], "patient_id"] = "-" + tricky  # the patient ID too
    split = three_way(meta)
    path = save_split_manifest(tmp_path / "split.csv", meta, split)
    cells = [c for line in path.read_text().splitlines() for c in line.split(",")]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    back = load_split_manifest(path, meta, report=lambda m: None)
    assert {k: v.tolist() for k, v in back.items()} == {k: v.tolist() for k, v in split.items()}


def test_changed_data_keeps_known_images_in_their_split_and_new_ones_in_none(tmp_path):
    rng = np.random.default_rng(0)
    meta = meta_frame(12)
    images = rng.integers(0, 256, (len(meta), 8, 8), dtype=np.uint8)
    split = three_way(meta)
    path = save_split_manifest(tmp_path / "split.csv", meta, split, images)
    saved = pd.read_csv(path, dtype=str).set_index("image_id")
    assert saved[DIGEST].iat[0] == f"{zlib.crc32(np.ascontiguousarray(images[split['train'][0]])):08x}"

    keep = ~meta["image_id"].isin(["p0_0.png", "p1_1.png"])  # two images removed
    new = pd.DataFrame({"image_id": ["n1.png", "n2.png", "n3.png"], "patient_id": ["n1", "n2", "n3"]})
    now = pd.concat([new.iloc[:1], meta[keep], new.iloc[1:]], ignore_index=True)  # rows move
    now_images = np.concatenate([rng.integers(0, 256, (1, 8, 8)), images[keep.to_numpy()], images[:2]])
    now_images = now_images.astype(np.uint8)
    altered = int(np.flatnonzero(now["image_id"] == "p5_0.png")[0])
    now_images[altered, 0, 0] ^= 1  # one pixel of one image changed
    msgs: list[str] = []
    back = load_split_manifest(path, now, now_images, report=msgs.append)
    assert msgs == [
        f"{path}: data changed since the run was split: 3 images added (in no split), "
        "2 images removed (left out), 1 image altered (kept in its split)"
    ]
    placed = {now["image_id"].iat[i]: name for name, idx in back.items() for i in idx}
    assert not {"n1.png", "n2.png", "n3.png"} & set(placed)
    assert placed == {i: s for i, s in saved["split"].items() if i not in ("p0_0.png", "p1_1.png")}

    old_run = tmp_path / "old.csv"  # a run saved before the CRC column: ids only, no 'altered'
    pd.read_csv(path, dtype=str).drop(columns=DIGEST).to_csv(old_run, index=False)
    msgs.clear()
    load_split_manifest(old_run, now, now_images, report=msgs.append)
    assert "altered" not in msgs[0] and "3 images added" in msgs[0]

    gone = now[~now["image_id"].isin(saved.index[saved["split"] == "val"])].reset_index(drop=True)
    with pytest.raises(ValueError, match=r"none of the \d+ images of split 'val' is in the data any more"):
        load_split_manifest(path, gone, report=lambda m: None)


def dicom_run_config(root: Path, tmp_path: Path, **train) -> object:
    return build_run_config(
        {
            "data": {"source": "folder", "path": str(root)},
            "prepare": {"size": 32},
            "model": {"name": "cnn2_64_128_bn"},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
            "train": {"epochs": 1, "batch_size": 16, "progress": False, "patience": 0, **train},
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )


def test_resume_and_evaluation_use_the_saved_split_of_changed_data(dicom_folder, tmp_path):
    run = fit(dicom_run_config(dicom_folder, tmp_path), log=lambda m: None)
    split_csv = (run / "split.csv").read_bytes()
    saved = pd.read_csv(run / "split.csv", dtype=str).set_index("image_id")
    assert (
        saved.loc[list(P7), "patient_id"].eq("HOSP/P7").all() and saved.loc[list(P7), "split"].nunique() == 1
    )
    assert saved.groupby("patient_id")["split"].nunique().max() == 1

    # the data change: 4 images of 2 new patients, 2 images removed (one from train), 1 altered
    for k in range(4):
        dicom(dicom_folder / "NORMAL" / f"new{k}.dcm", f"NEW{k // 2}", 500 + k)
    train_ids = saved.index[saved["split"] == "train"]
    removed = [train_ids[0], saved.index[saved["split"] != "train"][0]]
    for rel in removed:
        (dicom_folder / rel).unlink()
    altered = next(i for i in train_ids[::-1] if i not in P7 and i not in removed)
    dicom(dicom_folder / altered, saved.loc[altered, "patient_id"], 999)  # same patient, other pixels
    change = (
        "data changed since the run was split: 4 images added (in no split), 2 images removed (left out), "
    )
    change += "1 image altered (kept in its split)"

    msgs: list[str] = []
    fit(resume=run, overrides={"train.epochs": 2}, log=msgs.append)
    assert any(m.endswith(change) for m in msgs), msgs
    n_train = (saved["split"] == "train").sum() - 1
    assert any(f"{n_train:,} train / " in m for m in msgs), msgs
    assert (run / "split.csv").read_bytes() == split_csv  # the saved assignment stays as it was

    msgs.clear()
    data = load_run_data(run, msgs.append)
    assert any(m.endswith(change) for m in msgs)
    placed = {data.cache.meta["image_id"].iat[i]: name for name, idx in data.partition.items() for i in idx}
    assert placed == {i: s for i, s in saved["split"].items() if i not in removed}  # new images: nowhere


def cli_train(tmp_path: Path, *overrides: str) -> int:
    return main(
        [
            "train",
            "data.source=phantom",
            "data.n=60",
            "data.size=32",
            "prepare.size=32",
            "train.epochs=1",
            "train.progress=false",
            f"cache_dir={tmp_path / 'cache'}",
            "--out",
            str(tmp_path / "runs"),
            *overrides,
        ]
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ("model.name=resnet_18", "unknown model 'resnet_18'"),
        ("model.name=timm:no_such_net", "unknown timm model 'no_such_net'"),
        ("train.labels=[Tuberculosis]", "'Tuberculosis' is not a label"),
    ],
)
def test_a_bad_model_name_or_label_fails_before_any_cache_or_run_folder(tmp_path, capsys, bad, message):
    assert cli_train(tmp_path, bad) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_start_that_fails_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("out of memory in the first batch")

    monkeypatch.setattr(loop, "train_one_epoch", broken)
    assert cli_train(tmp_path, "model.name=cnn2_64_128_bn") == 1
    assert "out of memory in the first batch" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []
    assert any((tmp_path / "cache").iterdir())  # the cache is kept: it is valid and reused next time

    (tmp_path / "runs" / "mine").mkdir()  # an empty folder named for the run: kept, and left empty
    assert cli_train(tmp_path, "model.name=cnn2_64_128_bn", "--name", "mine") == 1
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["mine"]
    assert list((tmp_path / "runs" / "mine").iterdir()) == []


def test_an_out_that_is_a_file_fails_before_the_cache(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert cli_train(tmp_path, "model.name=cnn2_64_128_bn") == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
