"""Folders of images: labelled (``root/<CLASS>/*``, e.g. NORMAL/PNEUMONIA) and unlabelled for prediction.

Class folder names that spell a canonical label (``NORMAL`` -> "No Finding", ``PNEUMONIA`` ->
"Pneumonia") are renamed to it, so a model's labels line up by name with NIH-trained ones.
Patient IDs come from the file name (``person12_virus_3.jpeg`` -> ``person12``,
``NORMAL2-IM-0427-0001.jpeg`` -> ``NORMAL2-IM-0427``) or the whole stem when nothing matches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrkit.data.base import XRayDataset, standard_meta
from cxrkit.data.decode import IMAGE_SUFFIXES, read_image
from cxrkit.labels import try_canonical_label

DEFAULT_PATIENT_PATTERNS: tuple[str, ...] = (
    r"^(person\d+)_",  # Kermany pneumonia: person<ID>_<bacteria|virus>_<n>
    r"^((?:NORMAL\d*-)?IM-\d+)-",  # Kermany normal: [NORMAL2-]IM-<ID>-<n>
    r"^(\d{8})_\d{3}",  # NIH: <patient>_<follow-up>
)


def patient_from_name(name: str, patterns: Sequence[str] = DEFAULT_PATIENT_PATTERNS) -> str:
    """Patient ID from a file name: the first capture group of the first matching pattern, else the stem."""
    for pat in patterns:
        m = re.search(pat, name)
        if m:
            return m.group(1)
    return Path(name).stem


def list_images(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files (PNG/JPEG/DICOM) among ``paths``, folders searched recursively, sorted.

    Symlinked folders are not followed (no loops). Entries named like images that are not regular
    files (a FIFO, a device, a broken or looping symlink) are listed, so that reading them reports
    why they were refused instead of dropping them silently.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in (Path(i).absolute() for i in items):
        if item.is_dir():
            out.extend(
                p
                for p in sorted(item.rglob("*"))
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir() and not _hidden(p, item)
            )
        elif os.path.lexists(item):
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return out


def _hidden(path: Path, root: Path) -> bool:
    """A dot-file or a file in a dot-folder below ``root`` (editor temp files, .git, .ipynb_checkpoints)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


class _FileDataset(XRayDataset):
    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.meta["path"].iat[i])


class LabelledFolderDataset(_FileDataset):
    """``root/<CLASS>/*.png|jpg|jpeg|dcm`` as a binary (2 classes) or multi-class set, one-hot labels."""

    source = "folder"

    def __init__(
        self, root: str | Path, *, patient_patterns: Sequence[str] = DEFAULT_PATIENT_PATTERNS
    ) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"labelled image folder {self.root} does not exist")
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        per_class = {d.name: list_images(d) for d in class_dirs}
        per_class = {k: v for k, v in per_class.items() if v}
        if len(per_class) < 2:
            raise ValueError(
                f"{self.root}: expected at least two class folders with images "
                f"(root/<CLASS>/*.png), found {sorted(per_class) or 'none'}"
            )
        self.class_names = tuple(per_class)
        labels = tuple(try_canonical_label(c) or c for c in self.class_names)
        paths = [p for files in per_class.values() for p in files]
        cls = np.concatenate([[j] * len(v) for j, v in enumerate(per_class.values())])
        onehot = np.eye(len(labels), dtype=np.float32)[cls]
        meta = standard_meta(
            [str(p.relative_to(self.root)) for p in paths],
            [patient_from_name(p.name, patient_patterns) for p in paths],
            onehot,
            labels,
            path=[str(p) for p in paths],
            class_name=[self.class_names[c] for c in cls],
        )
        super().__init__(meta, labels, task="binary" if len(labels) == 2 else "multiclass")


class ImageFilesDataset(_FileDataset):
    """Unlabelled PNG/JPEG/DICOM files or folders, for prediction."""

    source = "files"

    def __init__(self, paths: str | Path | Sequence[str | Path]) -> None:
        files = list_images(paths)
        if not files:
            raise FileNotFoundError(f"no PNG/JPEG/DICOM files in {paths}")
        meta = standard_meta(
            [str(p) for p in files], [patient_from_name(p.name) for p in files], path=[str(p) for p in files]
        )
        super().__init__(meta, (), task="unlabelled")
