"""The sample/metadata shape shared by every data source.

A dataset is a table ``meta`` with one row per image (``image_id``, ``patient_id``, ``age``,
``sex``, ``view``, one float column per label with NaN for unknown, optional ``split`` and
``path``) plus ``load_image(i)`` returning (H, W) uint8 grey. Boxes, where a source has them,
are a table with ``BOX_COLUMNS`` whose coordinates live in a ``ref_w`` x ``ref_h`` pixel frame.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

META_COLUMNS: tuple[str, ...] = ("image_id", "patient_id", "age", "sex", "view")
BOX_COLUMNS: tuple[str, ...] = ("image_id", "label", "x", "y", "w", "h", "ref_w", "ref_h")
Task = Literal["multilabel", "binary", "multiclass", "unlabelled"]


def empty_boxes() -> pd.DataFrame:
    """An empty box table with the standard columns."""
    return pd.DataFrame(
        {c: pd.Series(dtype=object if c in ("image_id", "label") else float) for c in BOX_COLUMNS}
    )


def standard_meta(
    image_ids: Sequence[str],
    patient_ids: Sequence[str] | None = None,
    targets: np.ndarray | None = None,
    labels: Sequence[str] = (),
    **extra: Any,
) -> pd.DataFrame:
    """Build a metadata table in the standard shape; unknown age/sex/view become NaN."""
    n = len(image_ids)
    meta = pd.DataFrame({"image_id": np.asarray(image_ids, dtype=object).astype(str)})
    meta["patient_id"] = (
        np.asarray(patient_ids, dtype=object).astype(str) if patient_ids is not None else meta["image_id"]
    )
    for col in ("age", "sex", "view"):
        meta[col] = extra.pop(col, np.full(n, np.nan))
    if labels:
        t = np.asarray(targets, dtype=np.float32).reshape(n, len(labels))
        for j, name in enumerate(labels):
            meta[name] = t[:, j]
    for col, values in extra.items():
        meta[col] = values
    return meta


class XRayDataset:
    """Base of all sources: ``meta`` rows, ``labels`` columns, ``load_image(i)`` -> (H, W) uint8."""

    source: str = "xray"

    def __init__(
        self,
        meta: pd.DataFrame,
        labels: Sequence[str],
        *,
        task: Task = "multilabel",
        boxes: pd.DataFrame | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        missing = [c for c in (*META_COLUMNS, *labels) if c not in meta.columns]
        if missing:
            raise ValueError(f"{self.source} metadata lacks column(s) {missing}")
        self.meta = meta.reset_index(drop=True)
        self.labels: tuple[str, ...] = tuple(labels)
        self.task: Task = task
        self.boxes = boxes if boxes is not None else empty_boxes()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def has_images(self) -> bool:
        """False for metadata-only datasets (EDA without pixels)."""
        return True

    def load_image(self, i: int) -> np.ndarray:
        """Decode image ``i`` as (H, W) uint8 grey."""
        raise NotImplementedError(f"{type(self).__name__} has no images")

    def targets(self) -> np.ndarray:
        """Labels as float32 (N, L), NaN where unknown."""
        if not self.labels:
            return np.zeros((len(self), 0), dtype=np.float32)
        return self.meta[list(self.labels)].to_numpy(dtype=np.float32)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        img = self.load_image(i)
        row = self.meta.iloc[i]
        labels = row[list(self.labels)].to_numpy(dtype=np.float32) if self.labels else np.zeros(0)
        return {
            "image": self.transform(img) if self.transform is not None else img,
            "labels": labels,
            "image_id": row["image_id"],
            "index": i,
        }

    accept_missing_modality = False  # read DICOMs without a Modality tag (set from DataConfig)

    def fingerprint(self) -> str:
        """A digest of everything the images and labels depend on (for cache keys)."""
        h = hashlib.sha256(self.source.encode())
        if self.accept_missing_modality:  # more DICOMs are read: another cache (the default key unchanged)
            h.update(b"|accept_missing_modality")
        h.update(pd.util.hash_pandas_object(self.meta, index=False).to_numpy().tobytes())
        if "path" in self.meta.columns:
            for p in self.meta["path"]:
                st = os.stat(p) if p and os.path.exists(p) else None
                h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
        return h.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray) -> SubsetDataset:
        """A view over rows ``indices`` (metadata and images) of this dataset."""
        return SubsetDataset(self, np.asarray(indices, dtype=np.int64))

    def summary(self) -> str:
        """One line: source, images, patients, labels."""
        n_pat = self.meta["patient_id"].nunique()
        return f"{self.source}: {len(self):,} images, {n_pat:,} patients, {len(self.labels)} labels"


class SubsetDataset(XRayDataset):
    """Rows ``indices`` of a parent dataset; images are loaded from the parent."""

    def __init__(self, parent: XRayDataset, indices: np.ndarray) -> None:
        self.parent = parent
        self.indices = indices
        self.source = parent.source
        self.accept_missing_modality = parent.accept_missing_modality
        ids = set(parent.meta["image_id"].iloc[indices])
        super().__init__(
            parent.meta.iloc[indices],
            parent.labels,
            task=parent.task,
            boxes=parent.boxes[parent.boxes["image_id"].isin(ids)].reset_index(drop=True),
            transform=parent.transform,
        )

    @property
    def has_images(self) -> bool:
        return self.parent.has_images

    def load_image(self, i: int) -> np.ndarray:
        return self.parent.load_image(int(self.indices[i]))


def file_fingerprint(path: str | Path | None) -> str:
    """``name|size|mtime_ns`` of a file (or ``-`` for none), cheap enough for 100k files."""
    if path is None:
        return "-"
    st = os.stat(path)
    return f"{Path(path).name}|{st.st_size}|{st.st_mtime_ns}"


def require_path(cfg) -> str:
    """``cfg.path`` of a DataConfig, or the error a source that reads files gives without one."""
    if cfg.path is None:
        raise ValueError(f"data source {cfg.source!r} needs a path")
    return cfg.path
