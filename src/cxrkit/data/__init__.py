"""Data sources of cxrkit, all returning the shape of ``XRayDataset``; ``build_dataset`` picks one."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrkit.config import SOURCES, DataConfig, merge
from cxrkit.data.base import XRayDataset


def detect_source(path: str | Path) -> str:
    """Guess the source of ``path``: cache, ChestMNIST .npz, a CSV table, TFRecord shards, class folders,
    NIH or files."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".npz":
            return "chestmnist"
        if p.suffix.lower() == ".csv":
            return "table"
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

    Imports only the source it needs: each source's ``from_config`` in its own file, found through
    ``cxrkit.config.SOURCES``.
    """
    if not isinstance(cfg, DataConfig):
        cfg = merge(DataConfig(), cfg)
    if cfg.source not in SOURCES:
        raise ValueError(f"unknown data source {cfg.source!r}")
    module, function = SOURCES[cfg.source].split(":")
    return getattr(importlib.import_module(module), function)(cfg)


__all__ = ["XRayDataset", "build_dataset", "detect_source"]
