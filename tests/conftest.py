"""Tiny generated fixtures for every data source, and the real ../shared data where present."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXRKIT_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared (or $CXRKIT_SHARED); skip the test, saying why, when absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (set CXRKIT_SHARED to its folder)")
    return p


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def chest_like(h: int = 48, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth grey image with structure (so resizing and JPEG behave like on X-rays)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = 120 + 80 * np.sin(x / 7.0 + seed) * np.cos(y / 9.0) + rng.normal(0, 5, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def phantom_image(k: int = 0, size: int = 64) -> np.ndarray:
    """A new phantom from the generator ``phantom_run`` was trained on: an in-distribution study for it
    (``chest_like`` images are out of distribution for that run, and flagged so)."""
    from cxrkit.data.synthetic import PhantomDataset

    return PhantomDataset(k + 1, size, seed=4242).load_image(k)


def write_dicom(
    path: Path,
    arr: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Path:
    """Write a minimal valid DICOM file; ``arr=None`` writes one without pixel data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "TEST"
    ds.Modality = "DX"
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = arr.dtype.itemsize * 8
        ds.BitsStored = bits_stored or arr.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


NIH_ROWS = [
    # image, labels, patient, age, sex, view
    ("00000001_000.png", "Cardiomegaly", 1, 57, "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 58, "M", "PA"),
    ("00000002_000.png", "No Finding", 2, 81, "M", "PA"),
    ("00000003_000.png", "Hernia", 3, 74, "F", "PA"),
    ("00000003_001.png", "Pleural_Thickening|Effusion", 3, 75, "F", "AP"),
    ("00000004_000.png", "Mass|Nodule", 4, 82, "M", "AP"),
    ("00000005_000.png", "No Finding", 5, 69, "F", "PA"),
    ("00000006_000.png", "Infiltration", 6, 30, "M", "PA"),
]


@pytest.fixture
def nih_root(tmp_path: Path) -> Path:
    """An NIH-shaped folder: images_001/images/*.png (one RGBA, one 16-bit), CSV, lists, boxes."""
    root = tmp_path / "nih"
    img_dir = root / "images_001" / "images"
    img_dir.mkdir(parents=True)
    for k, (name, *_rest) in enumerate(NIH_ROWS[:-1]):  # the last row's image is missing
        grey = chest_like(40, 40, k)
        if k == 1:
            data = png_bytes(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA")
        elif k == 2:
            data = png_bytes(grey.astype(np.uint16) * 257)  # 16-bit
        else:
            data = png_bytes(grey)
        (img_dir / name).write_bytes(data)
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    header += "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
    lines = [f"{n},{lab},0,{p},{a},{s},{v},1024,1024,0.14,0.14" for n, lab, p, a, s, v in NIH_ROWS]
    (root / "Data_Entry_2017.csv").write_text(header + "\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(r[0] for r in NIH_ROWS if r[2] in (1, 2, 3, 6)) + "\n")
    (root / "test_list.txt").write_text("\n".join(r[0] for r in NIH_ROWS if r[2] in (4, 5)) + "\n")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000003_000.png,Hernia,512,512,256,128\n"
        "00000004_000.png,Mass,100,200,300,400\n"
        "00000001_001.png,Infiltrate,0,0,1024,1024\n"
    )
    return root


@pytest.fixture
def chestmnist_npz(tmp_path: Path) -> Path:
    """A ChestMNIST-shaped .npz: 28px, 6/2/3 images, labels in medmnist's column order."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = np.zeros((n, 14), dtype=np.uint8)
        lab[0, 12] = 1  # "pleural"
        lab[0, 13] = 1  # "hernia"
        if n > 2:
            lab[2, 0] = 1  # "atelectasis"
        arrays[f"{split}_labels"] = lab
    path = tmp_path / "chestmnist.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """Kermany-style NORMAL/PNEUMONIA folder with patient IDs in the names."""
    root = tmp_path / "kermany"
    names = {
        "NORMAL": ["IM-0115-0001.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-0427-0001.jpeg"],
        "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person81_virus_152.jpeg"],
    }
    for k, (cls, files) in enumerate(names.items()):
        (root / cls).mkdir(parents=True)
        for j, f in enumerate(files):
            rgb = np.dstack([chest_like(32, 40, 10 * k + j)] * 3)
            (root / cls / f).write_bytes(jpeg_bytes(rgb))
    return root


@pytest.fixture
def tfrecord_dir(tmp_path: Path) -> Path:
    """Two Kaggle-style shards with JPEG images and the 15 label features."""
    from cxrkit.data.tfrecord import encode_example, write_tfrecord
    from cxrkit.labels import TFRECORD_LABEL_FEATURES

    root = tmp_path / "tfrec"
    root.mkdir()
    rows = NIH_ROWS[:5]
    for shard, part in enumerate((rows[:3], rows[3:])):
        payloads = []
        for k, (name, labs, *_r) in enumerate(part):
            feats: dict = {
                "image": [jpeg_bytes(chest_like(60, 60, shard * 10 + k))],
                "image_id": [name.encode()],
            }
            for f in TFRECORD_LABEL_FEATURES:
                feats[f] = [int(f in labs.split("|"))]
            payloads.append(encode_example(feats))
        write_tfrecord(root / f"{shard:03d}-{len(part)}.tfrec", payloads)
    return root


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A truncated PNG, an empty file, a text file named .png and a DICOM without pixel data."""
    d = tmp_path / "bad"
    d.mkdir()
    good = png_bytes(chest_like(64, 64))
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    write_dicom(d / "nopixels.dcm", None)
    return {p.stem: p for p in d.iterdir()}


def nih_meta_frame(n_patients: int = 40, per_patient: int = 3, seed: int = 0) -> pd.DataFrame:
    """A synthetic metadata table with several images per patient and a rare label."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(per_patient):
            rows.append(
                {
                    "image_id": f"{p:08d}_{k:03d}.png",
                    "patient_id": str(p),
                    "A": float(rng.random() < 0.3),
                    "Rare": float(p % 10 == 0),
                }
            )
    return pd.DataFrame(rows)


TRAINED_FIXTURES = {"phantom_run", "phantom_eval", "exported_run", "phantom_site"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the session's phantom training are ``slow`` (``pytest -m "not slow"`` skips them)."""
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def phantom_run(tmp_path_factory) -> Path:
    """A small CNN trained on 1,500 phantoms (64 px, 10 epochs, about 40 s), shared by evaluation tests."""
    from cxrkit.config import build_run_config
    from cxrkit.training.loop import fit

    base = tmp_path_factory.mktemp("phantom-run")
    cfg = build_run_config(
        {
            "data": {"source": "phantom", "n": 1500, "size": 64, "images_per_patient": 2},
            "prepare": {"size": 64},
            "partition": {"train": 0.6, "val": 0.2, "test": 0.2},
            "model": {"name": "cnn4_32_64_128_256_bn"},
            "train": {
                "epochs": 10,
                "batch_size": 32,
                "lr": 2e-3,
                "schedule": "cosine",
                "progress": False,
                "patience": 0,
                "rotate": 0,
                "shift": 0,
                "scale": 0,
                "channels_last": True,  # about 1.2x faster on CPU (47 -> 39 s here)
            },
            "out": str(base / "runs"),
            "name": "phantom",
            "cache_dir": str(base / "cache"),
        }
    )
    return fit(cfg, log=lambda m: None)


def export_test_split(run: Path, root: Path, part: str = "test") -> pd.DataFrame:
    """The run's ``part`` images as an NIH folder, in cache order, with their labels and patients."""
    from cxrkit.labels import NO_FINDING
    from cxrkit.run.data import load_run_data

    data = load_run_data(run)
    rows = np.sort(data.partition[part])
    images = root / "images_001" / "images"
    images.mkdir(parents=True)
    lines = []
    for k, r in enumerate(rows):
        name = f"{k + 1:08d}_000.png"
        (images / name).write_bytes(png_bytes(np.asarray(data.cache.images[r])))
        found = [lab for j, lab in enumerate(data.labels) if data.targets[r, j] == 1 and lab != NO_FINDING]
        pid = data.cache.meta["patient_id"].iat[r]
        lines.append(f"{name},{'|'.join(found) or NO_FINDING},0,{pid},50,M,PA,64,64,0.14,0.14")
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    header += "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
    (root / "Data_Entry_2017.csv").write_text(header + "\n".join(lines) + "\n")
    return pd.DataFrame({"name": [ln.split(",")[0] for ln in lines], "row": rows})


@pytest.fixture(scope="session")
def phantom_site(phantom_run, tmp_path_factory) -> Path:
    """The phantom run's test split written out as an NIH-style folder: a "site" the run never saw."""
    root = tmp_path_factory.mktemp("site") / "nih-site"
    export_test_split(phantom_run, root)
    return root


@pytest.fixture(scope="session")
def phantom_eval(phantom_run) -> Path:
    """``evaluate_run`` of ``phantom_run`` on its test split (200 bootstrap replicates)."""
    from cxrkit.workflows.evaluate import EvalConfig, evaluate_run

    return evaluate_run(phantom_run, EvalConfig(n_boot=200, samples=8), log=lambda m: None)


@pytest.fixture(scope="session")
def exported_run(phantom_run, tmp_path_factory) -> Path:
    """A copy of ``phantom_run`` with model.onnx and model.int8.onnx (``cxr export --int8``)."""
    import shutil

    from cxrkit.workflows.export import export_run

    run = tmp_path_factory.mktemp("exported") / "phantom"
    skip = shutil.ignore_patterns("eval-*", "triage-*", "explain", "local*")
    shutil.copytree(phantom_run, run, ignore=skip)
    export_run(run, int8=True, log=lambda m: None)
    return run


from cxrkit.run.untrained import UNTRAINED_LABELS, make_untrained_run  # noqa: E402,F401 (fixtures use them)


def cxr_process(*args: str):
    """`cxr ARGS` in its own process group (as a shell runs a job), output captured.

    One torch thread: on a busy 2-core machine, two spinning intra-op threads make a tiny epoch ~25x slower.
    """
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "cxrkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
