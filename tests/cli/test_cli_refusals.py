"""Studies that were not really assessed and inputs cxrkit cannot use: one clear line, a non-zero exit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import chest_like, make_untrained_run, png_bytes, write_dicom
from PIL import Image

from cxrkit.cli import main
from cxrkit.outputs import read_csv


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_untrained_run(tmp_path / "run")


def _no_modality(path: Path) -> Path:
    write_dicom(path, chest_like(64, 64).astype(np.uint16))
    ds = pydicom.dcmread(path)
    del ds.Modality
    ds.save_as(path)
    return path


def test_predict_flags_blank_and_modality_less_studies_first_and_exits_1(run_dir, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    (images / "good.png").write_bytes(png_bytes(chest_like(96, 96)))
    (images / "black.png").write_bytes(png_bytes(np.zeros((96, 96), np.uint8)))
    (images / "strip.png").write_bytes(png_bytes(np.tile(chest_like(40, 400), (1, 75))))  # 30,000 x 40
    _no_modality(images / "ct-or-cr.dcm")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), str(images), "--out", str(out), "--quiet"]) == 1
    table = read_csv(out, text=("image_id", "error", "triage_flag"))
    flags = dict(zip(table["image_id"], table["triage_flag"], strict=True))
    assert flags["black.png"] == flags["strip.png"] == flags["ct-or-cr.dcm"] == "not assessable"
    assert table["image_id"].iloc[-1] == "good.png" and flags["good.png"] in ("normal", "abnormal")
    printed = capsys.readouterr().out
    assert "no image content" in printed and "3:1 limit" in printed and "no Modality tag" in printed
    # the user's opt-in scores the DICOM
    two = [str(images / "ct-or-cr.dcm"), str(images / "good.png"), "--accept-missing-modality"]
    assert main(["predict", str(run_dir), *two, "--out", str(out), "--quiet"]) == 0
    assert set(read_csv(out, text=("error",))["error"]) == {""}


def test_triage_puts_blank_studies_on_top_and_exits_1(run_dir, tmp_path):
    (tmp_path / "white.png").write_bytes(png_bytes(np.full((96, 96), 255, np.uint8)))
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(96, 96)))
    out = tmp_path / "t"
    code = main(
        ["triage", str(run_dir), str(tmp_path / "good.png"), str(tmp_path / "white.png"), "--out", str(out)]
    )
    assert code == 1
    worklist = pd.read_csv(out / "worklist.csv")
    assert worklist["image_id"].iloc[0] == "white.png" and worklist["rank"].iloc[0] == 1
    summary = json.loads((out / "triage.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [r["status"] for r in summary["not_scored"]] == ["not assessable"]


def test_a_tiff_is_refused_the_same_way_by_cli_and_api(run_dir, tmp_path, capsys):
    import cxrkit

    buf = io.BytesIO()
    Image.fromarray(chest_like(64, 64)).save(buf, format="TIFF")
    tif = tmp_path / "scan.png"  # named like a PNG: the content decides
    tif.write_bytes(buf.getvalue())
    assert main(["predict", str(run_dir), str(tif), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 1
    assert "not a PNG/JPEG/DICOM image" in capsys.readouterr().out
    row = cxrkit.load_run(run_dir).predict(tif).iloc[0]
    assert row["triage_flag"] == "unreadable" and "not a PNG/JPEG/DICOM image" in row["error"]


def test_an_output_on_a_pseudo_file_system_says_not_writable(run_dir, tmp_path, capsys):
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(96, 96)))
    code = main(["predict", str(run_dir), str(tmp_path / "good.png"), "--out", "/proc/x.csv", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not writable" in err[0], err


def test_resume_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a run folder (no config.yaml)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_split_names_dicoms_whose_patient_came_from_the_file_name(tmp_path, capsys):
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for k in range(4):
            path = write_dicom(tmp_path / "data" / cls / f"{cls}-{k}.dcm", chest_like(48, 48, seed=k))
            if k < 3:  # anonymised: PatientID removed
                ds = pydicom.dcmread(path)
                del ds.PatientID
                ds.save_as(path)
    code = main(["split", str(tmp_path / "data"), "--out", str(tmp_path / "s.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "warning: 6 of 8 DICOM files have no PatientID" in out and "span splits" in out
    from cxrkit.config import build_run_config
    from cxrkit.training.loop import fit

    logs: list[str] = []
    cfg = {
        "data": {"source": "folder", "path": str(tmp_path / "data")},
        "prepare": {"size": 32},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "model": {"name": "cnn3_32_64_128"},
        "train": {"epochs": 1, "batch_size": 4, "progress": False},
        "out": str(tmp_path / "runs"),
        "cache_dir": str(tmp_path / "cache"),
    }
    fit(build_run_config(cfg), log=logs.append)
    assert any(line.startswith("warning: 6 of 8 DICOM files have no PatientID") for line in logs), logs


def test_folder_scans_list_every_picture_and_find_images_by_content(run_dir, tmp_path, capsys):
    """A TIFF, BMP or WebP is a row saying why, a .jfif JPEG and a suffix-less PNG are scored."""
    folder = tmp_path / "in"
    folder.mkdir()
    img = Image.fromarray(chest_like(96, 96))
    img.save(folder / "good.png")
    for name, fmt in (("x.tif", "TIFF"), ("x.bmp", "BMP"), ("x.webp", "WEBP"), ("x.jfif", "JPEG")):
        img.save(folder / name, format=fmt)
    img.save(folder / "IMG_0001", format="PNG")
    (folder / "notes.txt").write_text("not a study")
    out = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), str(folder), "--out", str(out), "--quiet"]) == 1
    table = read_csv(out, text=("image_id", "error", "triage_flag"))
    flags = dict(zip(table["image_id"], table["triage_flag"], strict=True))
    assert set(flags) == {"good.png", "x.tif", "x.bmp", "x.webp", "x.jfif", "IMG_0001"}
    assert {flags[n] for n in ("x.tif", "x.bmp", "x.webp")} == {"unreadable"}
    assert {flags[n] for n in ("good.png", "x.jfif", "IMG_0001")} <= {"normal", "abnormal"}
    assert main(["inspect", str(folder / "x.tif")]) == 1
    assert "not a PNG/JPEG/DICOM image" in capsys.readouterr().out


def test_inspect_says_what_predict_would_refuse(tmp_path, capsys):
    (tmp_path / "blank.png").write_bytes(png_bytes(np.zeros((96, 96), np.uint8)))
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(96, 96)))
    assert main(["inspect", str(tmp_path / "good.png")]) == 0
    assert main(["inspect", str(tmp_path / "blank.png")]) == 1
    assert "NOT ASSESSABLE" in capsys.readouterr().out.splitlines()[-1]


def test_a_suffixless_dicom_keeps_its_patient_id(tmp_path):
    from cxrkit.data.folder import patient_keys

    path = write_dicom(tmp_path / "IM0001", chest_like(48, 48))
    ds = pydicom.dcmread(path)
    ds.PatientID = "PAT7"
    ds.save_as(path)
    assert patient_keys([path]) == (["PAT7"], ["dicom"])


def test_a_model_that_gives_no_score_is_never_counted_as_scored(run_dir, tmp_path):
    from cxrkit.run import files
    from cxrkit.run.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run_dir / files.BEST)
    ckpt["model_state"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                           for k, v in ckpt["model_state"].items()}  # fmt: skip
    save_checkpoint(run_dir / files.BEST, **ckpt)
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(96, 96)))
    out = tmp_path / "t"
    assert main(["triage", str(run_dir), str(tmp_path / "good.png"), "--out", str(out)]) == 1
    summary = json.loads((out / "triage.json").read_text())
    assert summary["scored"] == 0 and [r["status"] for r in summary["not_scored"]] == ["not scored"]


def test_explain_takes_the_modality_opt_in_and_triage_out_on_proc_is_not_writable(run_dir, tmp_path, capsys):
    dcm = _no_modality(tmp_path / "nomod.dcm")
    assert main(["explain", str(run_dir), str(dcm), "--top", "1", "--out", str(tmp_path / "x")]) == 1
    code = main(
        [
            "explain",
            str(run_dir),
            str(dcm),
            "--top",
            "1",
            "--out",
            str(tmp_path / "x"),
            "--accept-missing-modality",
        ]
    )
    assert code == 0
    if Path("/proc/self").exists():
        capsys.readouterr()
        assert (
            main(["triage", str(run_dir), str(dcm), "--out", "/proc/tri", "--accept-missing-modality"]) == 2
        )
        assert "not writable" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("x: 1\n")
    assert main(["train", "--resume", str(tmp_path / "cfg.yaml")]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err


def test_training_data_reads_modality_less_dicoms_only_when_the_config_says_so(tmp_path, capsys):
    from cxrkit.config import DataConfig
    from cxrkit.data import build_dataset
    from cxrkit.data.cache import prepare_cache

    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for k in range(2):
            _no_modality(tmp_path / "d" / cls / f"{cls}{k}.dcm")
        (tmp_path / "d" / cls / "ok.png").write_bytes(png_bytes(chest_like(64, 64)))

    def cache(accept: bool):
        cfg = DataConfig(source="folder", path=str(tmp_path / "d"), accept_missing_modality=accept)
        return prepare_cache(build_dataset(cfg), tmp_path / "c", size=32, progress=False)

    strict = cache(False)
    assert strict.n_images == 2 and all("no Modality tag" in why for _, why in strict.failures)
    lenient = cache(True)
    assert not lenient.reused and lenient.n_images == 6  # another cache: the option is in its key
    dcm = tmp_path / "d" / "NORMAL" / "NORMAL0.dcm"
    assert main(["inspect", str(dcm)]) == 1 and "no Modality tag" in capsys.readouterr().out
    assert main(["inspect", str(dcm), "--accept-missing-modality"]) == 0


def test_validate_passes_its_bootstrap_flag_on(monkeypatch, tmp_path, capsys):
    """``cxr validate --bootstrap N`` reaches the evaluation (it was once read from a wrong attribute)."""
    import cxrkit.workflows.validate as wf
    from cxrkit.cli import main

    seen = {}
    monkeypatch.setattr(wf, "validate_run", lambda run, data, cfg, **kw: seen.setdefault("cfg", cfg))
    assert main(["validate", "some-run", str(tmp_path), "--bootstrap", "7"]) == 0, capsys.readouterr().err
    assert seen["cfg"].n_boot == 7


def test_train_data_shorthand_names_a_table_or_a_folder(monkeypatch, tmp_path):
    """``cxr train --data labels.csv`` is data.source=table; a folder is data.source=folder."""
    import cxrkit.training.loop as loop
    from cxrkit.cli import main

    seen = []
    monkeypatch.setattr(loop, "fit", lambda cfg=None, **kw: seen.append(cfg) or tmp_path)
    table = tmp_path / "labels.csv"
    table.write_text("path,Effusion\n")
    assert main(["train", "--data", str(table)]) == 0
    assert main(["train", "--data", str(tmp_path)]) == 0
    assert [(c.data.source, c.data.path) for c in seen] == [("table", str(table)), ("folder", str(tmp_path))]
