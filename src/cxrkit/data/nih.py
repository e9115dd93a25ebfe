"""NIH ChestX-ray14: PNG folder (flat or ``images_0XX/images/``), Data_Entry CSV, official split, boxes.

Metadata comes from the user's ``Data_Entry_2017*.csv`` when given or found in the folder, else
from the copy shipped in the ``torchxrayvision`` wheel, so EDA works offline with no download.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.base import XRayDataset, empty_boxes, file_fingerprint, standard_meta
from cxrkit.data.decode import read_image
from cxrkit.labels import LABELS, canonical_label, encode_finding_labels

log = logging.getLogger(__name__)

NIH_BOX_FRAME = 1024
"""BBox_List_2017 coordinates are pixels of the 1024x1024 PNGs NIH distributes."""
_REQUIRED = ("Image Index", "Finding Labels", "Patient ID")


class MetadataError(ValueError):
    """A metadata file that is missing or lacks what cxrkit needs; the message names the file."""


def shipped_data_file(name: str) -> Path:
    """Path of a metadata file shipped in the torchxrayvision wheel, without importing it."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise MetadataError(
            f"no {name} given and torchxrayvision is not installed: pass the NIH CSV "
            "explicitly or `pip install torchxrayvision` (it ships the NIH metadata)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        raise MetadataError(f"{path} not found in the installed torchxrayvision wheel")
    return path


def _find(root: Path | None, pattern: str) -> Path | None:
    if root is None:
        return None
    hits = sorted(root.glob(pattern)) or sorted(root.glob(f"*/{pattern}"))
    return hits[-1] if hits else None


def parse_age(values: pd.Series) -> np.ndarray:
    """Ages in years from ints or NIH's old ``058Y``/``011M``/``020D`` strings; >120 or bad -> NaN."""
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, copy=True)
    other = np.isnan(num) & values.notna().to_numpy()
    if other.any():  # the 2017 release spells ages as 058Y / 011M / 020D
        m = values[other].astype(str).str.strip().str.upper().str.extract(r"^(\d+(?:\.\d+)?)([YMD]?)$")
        n = pd.to_numeric(m[0], errors="coerce").to_numpy(dtype=float)
        unit = m[1].fillna("").to_numpy()
        num[other] = np.where(unit == "M", n / 12.0, np.where(unit == "D", n / 365.25, n))
    num[(num < 0) | (num > 120)] = np.nan
    return num


def _patient_ids(col: pd.Series) -> np.ndarray:
    """Patient IDs as strings without leading zeros ("00000001" and "1" are the same patient)."""
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().all():
        return num.astype(np.int64).astype(str).to_numpy(dtype=object)
    return np.array([str(p).strip().lstrip("0") or "0" for p in col], dtype=object)


def read_nih_csv(path: Path) -> pd.DataFrame:
    """Read Data_Entry_2017*.csv into the standard metadata shape with 15 label columns."""
    try:
        raw = pd.read_csv(path, dtype=object)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, EOFError) as err:
        raise MetadataError(f"{path}: cannot read NIH metadata CSV ({err})") from None
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise MetadataError(
            f"{path}: missing column(s) {missing}; an NIH Data_Entry CSV has "
            f"{', '.join(_REQUIRED)}, Patient Age, Patient Gender, View Position"
        )
    try:
        targets = encode_finding_labels(raw["Finding Labels"].fillna("").to_numpy(dtype=object))
    except ValueError as err:
        raise MetadataError(f"{path}: {err}") from None
    nan = pd.Series([np.nan] * len(raw))
    return standard_meta(
        raw["Image Index"].to_numpy(dtype=object),
        _patient_ids(raw["Patient ID"]),
        targets,
        LABELS,
        age=parse_age(raw["Patient Age"]) if "Patient Age" in raw else nan.to_numpy(),
        sex=raw.get("Patient Gender", nan).to_numpy(),
        view=raw.get("View Position", nan).to_numpy(),
        follow_up=pd.to_numeric(raw.get("Follow-up #", nan), errors="coerce").to_numpy(),
    )


def read_nih_boxes(path: Path) -> pd.DataFrame:
    """Read BBox_List_2017.csv into the standard box table (1024x1024 frame, canonical labels)."""
    raw = pd.read_csv(path)
    cols = [c for c in raw.columns if not c.startswith("Unnamed")]
    if len(cols) < 6 or cols[0] != "Image Index":
        raise MetadataError(f"{path}: expected Image Index, Finding Label, Bbox [x, y, w, h] columns")
    raw = raw[cols[:6]]
    raw.columns = ["image_id", "label", "x", "y", "w", "h"]
    try:
        raw["label"] = [canonical_label(v, source=f"box label in {path.name}") for v in raw["label"]]
    except ValueError as err:
        raise MetadataError(str(err)) from None
    raw["ref_w"] = float(NIH_BOX_FRAME)
    raw["ref_h"] = float(NIH_BOX_FRAME)
    return raw.reset_index(drop=True)


def index_png_folder(root: Path) -> dict[str, Path]:
    """Map ``image_id`` -> path for PNGs under ``root``, flat or ``images_0XX/images/``."""
    found: dict[str, Path] = {}
    for p in root.rglob("*.png"):
        found.setdefault(p.name, p)
    return found


def read_split_list(path: Path) -> set[str]:
    """Image names from ``train_val_list.txt`` or ``test_list.txt``."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


class NIHDataset(XRayDataset):
    """ChestX-ray14 images and metadata; ``root=None`` gives a metadata-only dataset for EDA."""

    source = "nih"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        csv: str | Path | None = None,
        bbox_csv: str | Path | None = None,
        views: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"NIH image folder {self.root} does not exist")
        self.csv_path = (
            Path(csv)
            if csv
            else (
                _find(self.root, "Data_Entry_2017*.csv") or shipped_data_file("Data_Entry_2017_v2020.csv.gz")
            )
        )
        if not self.csv_path.exists():
            raise MetadataError(f"{self.csv_path}: metadata CSV not found")
        meta = read_nih_csv(self.csv_path)
        if views:
            keep = {v.upper() for v in views}
            meta = meta[meta["view"].astype(str).str.upper().isin(keep)]
        self.missing_images = 0
        self.unlisted_images = 0
        if self.root is not None:
            meta = self._attach_paths(meta)
            meta = self._attach_official_split(meta)
        box_path = (
            Path(bbox_csv)
            if bbox_csv
            else (_find(self.root, "BBox_List_2017*.csv") or shipped_data_file("BBox_List_2017.csv.gz"))
        )
        self.bbox_path = box_path
        boxes = read_nih_boxes(box_path) if box_path.exists() else empty_boxes()
        boxes = boxes[boxes["image_id"].isin(set(meta["image_id"]))].reset_index(drop=True)
        super().__init__(meta, LABELS, task="multilabel", boxes=boxes)

    def _attach_paths(self, meta: pd.DataFrame) -> pd.DataFrame:
        assert self.root is not None
        files = index_png_folder(self.root)
        listed = meta["image_id"].isin(files.keys())
        self.missing_images = int((~listed).sum())
        self.unlisted_images = len(set(files) - set(meta["image_id"]))
        if self.missing_images:
            log.warning(
                "%d of %d images in %s are not in %s; using the %d found",
                self.missing_images,
                len(meta),
                self.csv_path.name,
                self.root,
                int(listed.sum()),
            )
        if self.unlisted_images:
            log.warning("%d PNGs in %s have no metadata row; ignored", self.unlisted_images, self.root)
        meta = meta[listed].copy()
        meta["path"] = [str(files[i]) for i in meta["image_id"]]
        return meta

    def _attach_official_split(self, meta: pd.DataFrame) -> pd.DataFrame:
        test_file = _find(self.root, "test_list.txt")
        trainval_file = _find(self.root, "train_val_list.txt")
        if test_file is None and trainval_file is None:
            return meta
        split = pd.Series(pd.NA, index=meta.index, dtype=object)
        if trainval_file is not None:
            split[meta["image_id"].isin(read_split_list(trainval_file))] = "trainval"
        if test_file is not None:
            split[meta["image_id"].isin(read_split_list(test_file))] = "test"
        meta["split"] = split
        return meta

    @property
    def has_images(self) -> bool:
        return self.root is not None

    def load_image(self, i: int) -> np.ndarray:
        if self.root is None:
            raise RuntimeError("metadata-only NIH dataset: pass the image folder to load images")
        return read_image(self.meta["path"].iat[i], accept_missing_modality=self.accept_missing_modality)

    def fingerprint(self) -> str:
        extra = f"{file_fingerprint(self.csv_path)}|{file_fingerprint(self.bbox_path)}"
        return super().fingerprint() + re.sub(r"\s", "", extra)


def from_config(cfg) -> NIHDataset:
    """``data.source: nih`` (the table: ``cxrkit.config.SOURCES``); metadata only without a path."""
    ds = NIHDataset(cfg.path, csv=cfg.csv, bbox_csv=cfg.bbox_csv, views=cfg.views or None)
    ds.accept_missing_modality = cfg.accept_missing_modality
    return ds
