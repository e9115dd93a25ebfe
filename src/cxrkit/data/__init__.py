"""Data sources of cxrkit, all returning the shape of ``XRayDataset``; ``build_dataset`` picks one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrkit.config import DataConfig, merge
from cxrkit.data.base import XRayDataset


def detect_source(path: str | Path) -> str:
    """Guess the source of ``path``: cache, ChestMNIST .npz, TFRecord shards, class folders, NIH or files."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".npz":
            return "chestmnist"
        return "tfrecord" if ".tfrec" in p.name else "files"
    if (p / "manifest.json").exists():
        return "cache"
    names = [c.name for c in p.iterdir()]
    if any(".tfrec" in n for n in names):
        return "tfrecord"
    if any(n.startswith("Data_Entry_2017") for n in names) or any(n.startswith("images_0") for n in names):
        return "nih"
    pngs = [n for n in names if n.endswith(".png")]
    if pngs and all(len(n) == 16 and n[8] == "_" for n in pngs[:50]):
        return "nih"
    subdirs = [c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")]
    if len(subdirs) >= 2 and not pngs:
        return "folder"
    return "files"


def build_dataset(cfg: DataConfig | Mapping[str, Any]) -> XRayDataset:
    """Construct the dataset a DataConfig (or a mapping like a config's ``data:`` section) describes.

    Imports only the source it needs.
    """
    if not isinstance(cfg, DataConfig):
        cfg = merge(DataConfig(), cfg)
    src = cfg.source
    if src == "phantom":
        from cxrkit.data.synthetic import PhantomDataset

        return PhantomDataset(
            n=cfg.n, size=cfg.size, seed=cfg.seed, images_per_patient=cfg.images_per_patient
        )
    if src == "nih":
        from cxrkit.data.nih import NIHDataset

        return NIHDataset(cfg.path, csv=cfg.csv, bbox_csv=cfg.bbox_csv, views=cfg.views or None)
    if cfg.path is None and src != "chestmnist":
        raise ValueError(f"data source {src!r} needs a path")
    if src == "chestmnist":
        from cxrkit.data.chestmnist import ChestMNISTDataset

        p = Path(cfg.path or ".")
        if p.suffix == ".npz":
            return ChestMNISTDataset(p, split=cfg.split)
        return ChestMNISTDataset(root=p, size=cfg.size, split=cfg.split, download=cfg.download)
    if src == "tfrecord":
        from cxrkit.data.nih import NIHDataset
        from cxrkit.data.tfrecord import TFRecordDataset

        try:
            meta = NIHDataset(csv=cfg.csv).meta
        except (FileNotFoundError, ValueError):
            meta = None
        return TFRecordDataset(cfg.path, metadata=meta)  # type: ignore[arg-type]
    if src == "folder":
        from cxrkit.data.folder import LabelledFolderDataset

        return LabelledFolderDataset(cfg.path)  # type: ignore[arg-type]
    if src == "files":
        from cxrkit.data.folder import ImageFilesDataset

        return ImageFilesDataset(cfg.path)  # type: ignore[arg-type]
    if src == "cache":
        from cxrkit.data.cache import CachedDataset

        return CachedDataset(cfg.path)  # type: ignore[arg-type]
    raise ValueError(f"unknown data source {src!r}")


__all__ = ["XRayDataset", "build_dataset", "detect_source"]
