"""Frozen dataclass configs; YAML in, YAML out. Precedence: CLI over YAML over dataclass defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

SOURCES = ("nih", "chestmnist", "tfrecord", "folder", "files", "phantom", "cache")


@dataclass(frozen=True)
class DataConfig:
    """Which data to load. ``path`` is the image folder, .npz, shard folder or cache folder."""

    source: str = "phantom"
    path: str | None = None
    csv: str | None = None  # NIH Data_Entry CSV (default: in the folder, else torchxrayvision's copy)
    bbox_csv: str | None = None  # NIH BBox_List_2017.csv (same defaults)
    views: tuple[str, ...] = ()  # NIH: keep only these view positions (e.g. PA)
    size: int = 64  # phantom image size / ChestMNIST file size
    n: int = 600  # phantoms: number of images
    images_per_patient: int = 1  # phantoms: consecutive images sharing a patient ID
    seed: int = 0
    split: str = "all"  # ChestMNIST: all, train, val or test
    download: bool = False  # ChestMNIST: download when missing

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source {self.source!r}: expected one of {', '.join(SOURCES)}")


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing cache parameters."""

    size: int = 224
    mode: str = "pad"  # pad (aspect-preserving, black borders) or crop (centre crop)
    workers: int = 0  # 0: one per CPU core
    force: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("pad", "crop"):
            raise ValueError(f"resize mode {self.mode!r}: expected pad or crop")
        if not 8 <= self.size <= 4096:
            raise ValueError(f"cache size {self.size}: expected 8..4096 pixels")


@dataclass(frozen=True)
class SplitConfig:
    """How to split: by patient (stratified) or the source's official split."""

    method: str = "patient"  # patient or official
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    def fractions(self) -> dict[str, float]:
        """The split fractions as a mapping."""
        return {"train": self.train, "val": self.val, "test": self.test}


def merge(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``cfg`` with the non-None ``overrides`` applied; unknown keys are an error."""
    names = {f.name: f for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown {type(cfg).__name__} key(s) {unknown}; expected {sorted(names)}")
    clean = {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(getattr(cfg, k), tuple) and isinstance(v, (list, str)):
            v = tuple(v) if isinstance(v, list) else tuple(s for s in v.split(",") if s)
        clean[k] = v
    return dataclasses.replace(cfg, **clean)  # type: ignore[type-var]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error for a missing file or a non-mapping document."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    return doc


def to_yaml(**sections: Any) -> str:
    """Dump dataclass configs as YAML sections (saved beside every run)."""
    return yaml.safe_dump({k: _plain(dataclasses.asdict(v)) for k, v in sections.items()}, sort_keys=False)


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
