"""Folders of images: labelled (``root/<CLASS>/*``, e.g. NORMAL/PNEUMONIA) and unlabelled for prediction.

Class folder names that spell a canonical label (``NORMAL`` -> "No Finding", ``PNEUMONIA`` ->
"Pneumonia") are renamed to it, so a model's labels line up by name with NIH-trained ones.

The patient of a DICOM file (``.dcm``/``.dicom``) is its PatientID tag, read from the header
only, as ``ISSUER/ID`` when IssuerOfPatientID is set: file names of one patient need not look
alike. Every other file, and a DICOM without a PatientID (or an unreadable header), takes its
patient from the file name (``person12_bacteria_46.jpeg`` -> ``person12``,
``NORMAL2-IM-0427-0001.jpeg`` -> ``NORMAL2-IM-0427``), or the whole stem when nothing matches.
The meta column ``patient_source`` says which rule gave each image its patient (``dicom`` or
``file name``); DICOMs that fell back to the name are counted in a logged warning.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrkit.data.base import XRayDataset, standard_meta
from cxrkit.data.decode import (
    IMAGE_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    check_regular_file,
    has_image_magic,
    is_dicom_file,
    read_image,
)
from cxrkit.labels import try_canonical_label

log = logging.getLogger(__name__)

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


DICOM_SUFFIXES = (".dcm", ".dicom")
_PATIENT_TAGS = (0x00080005, 0x00100020, 0x00100021)  # SpecificCharacterSet, PatientID, IssuerOfPatientID


def _past_patient_tags(tag, _vr, _length) -> bool:
    return tag > _PATIENT_TAGS[-1]  # data sets are sorted by tag: stop reading after the patient's


def _tag_text(value: object) -> str:
    """A tag's value as trimmed text (multi-valued joined by backslash, DICOM's separator); '' when absent."""
    if value is None:
        return ""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00\t\r\n")


def dicom_patient(path: str | Path) -> str | None:
    """The patient key of a DICOM file, ``ISSUER/ID`` or ``ID``, from its header; None without a PatientID.

    Only the first elements are parsed (up to IssuerOfPatientID, large values deferred), so it is
    fast on big files; a file that is not regular or not readable as DICOM also gives None.
    """
    from pydicom.filereader import read_partial

    try:
        check_regular_file(path)  # a FIFO named .dcm would block the read
        with open(path, "rb") as fh:
            ds = read_partial(
                fh, _past_patient_tags, defer_size=1024, force=True, specific_tags=list(_PATIENT_TAGS)
            )
            pid, issuer = _tag_text(ds.get("PatientID")), _tag_text(ds.get("IssuerOfPatientID"))
    except Exception:  # any malformed header: the file-name rule applies (decoding reports the file)
        return None
    if not pid:
        return None
    return f"{issuer}/{pid}" if issuer else pid


NO_PATIENT_ID = "file name (DICOM without PatientID)"  # patient_source of a DICOM named by its file


def patient_fallback_note(meta) -> str | None:
    """One line for ``cxr split``/``cxr train`` when DICOMs got their patient from the file name, else None.

    Anonymised files of one person carry unrelated names, so those images can span splits.
    """
    if "patient_source" not in meta:
        return None
    fallback = int((meta["patient_source"] == NO_PATIENT_ID).sum())
    if not fallback:
        return None
    dicoms = fallback + int((meta["patient_source"] == "dicom").sum())
    return (
        f"warning: {fallback:,} of {dicoms:,} DICOM files have no PatientID, so their patient was "
        "taken from the file name: anonymised images of one person may then span splits. Restore the "
        "PatientID tag (or name the files by patient) before trusting a patient-wise split"
    )


def patient_keys(
    paths: Sequence[Path], patterns: Sequence[str] = DEFAULT_PATIENT_PATTERNS
) -> tuple[list[str], list[str]]:
    """(patient ID, rule used: ``dicom`` or ``file name``) of each file; see the module docstring."""
    ids, sources, fallback, n_dicom = [], [], 0, 0
    for p in paths:
        pid, dicom = None, is_dicom_file(p)  # by name, else by content (PACS names: IM0001)
        if dicom:
            n_dicom += 1
            pid = dicom_patient(p)
            fallback += pid is None
        ids.append(pid if pid is not None else patient_from_name(p.name, patterns))
        sources.append("dicom" if pid is not None else NO_PATIENT_ID if dicom else "file name")
    if fallback:
        log.warning(
            "%d of %d DICOM files have no readable PatientID; their patient is taken from the file name",
            fallback,
            n_dicom,
        )
    return ids, sources


def list_images(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files (PNG/JPEG/DICOM) among ``paths``, folders searched recursively, sorted.

    Symlinked folders are followed (each real folder once: no loops); DICOMs without a suffix are
    found by their magic bytes. Entries named like images that are not regular files (a FIFO, a
    device, a broken or looping symlink, an unreadable folder) are listed, so that reading them
    reports why they were refused instead of dropping them silently.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in (Path(i).absolute() for i in items):
        if item.is_dir():
            out.extend(sorted(_walk_images(item)))
        elif os.path.lexists(item):
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return out


def _walk_images(root: Path) -> list[Path]:
    """Every study below ``root``: image-named entries and DICOMs without a suffix (``IM0001``).

    Symlinked folders are followed, each real folder once (no loops); hidden files are listed too;
    a sub-folder that cannot be read is listed itself, so reading it reports why (never silently lost).
    """
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:
        if err.filename and Path(err.filename) != root:
            found.append(Path(err.filename))
        elif err.filename:
            raise PermissionError(f"{root}: folder cannot be read ({err.strerror})")

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back to a folder already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if d != ".git"]
        for n in names:
            p = Path(folder, n)
            if Path(n).suffix.lower() in (*IMAGE_SUFFIXES, *OTHER_IMAGE_SUFFIXES) or _is_image_file(p):
                found.append(p)
    return found


def _is_image_file(path: Path) -> bool:
    """A regular file with a PNG, JPEG or DICOM signature, whatever its name; never opens a FIFO."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 8:
            return False
        with open(path, "rb") as fh:
            return has_image_magic(fh.read(132))
    except OSError:
        return False


class FileDataset(XRayDataset):
    """A source whose rows are image files (``meta["path"]``), decoded on demand."""

    def load_image(self, i: int) -> np.ndarray:
        return read_image(self.meta["path"].iat[i], accept_missing_modality=self.accept_missing_modality)


class LabelledFolderDataset(FileDataset):
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
        patients, patient_source = patient_keys(paths, patient_patterns)
        meta = standard_meta(
            [str(p.relative_to(self.root)) for p in paths],
            patients,
            onehot,
            labels,
            path=[str(p) for p in paths],
            class_name=[self.class_names[c] for c in cls],
            patient_source=patient_source,
        )
        super().__init__(meta, labels, task="binary" if len(labels) == 2 else "multiclass")


class ImageFilesDataset(FileDataset):
    """Unlabelled PNG/JPEG/DICOM files or folders, for prediction."""

    source = "files"

    def __init__(self, paths: str | Path | Sequence[str | Path]) -> None:
        files = list_images(paths)
        if not files:
            raise FileNotFoundError(f"no PNG/JPEG/DICOM files in {paths}")
        patients, patient_source = patient_keys(files)
        meta = standard_meta(
            [str(p) for p in files], patients, path=[str(p) for p in files], patient_source=patient_source
        )
        super().__init__(meta, (), task="unlabelled")


def labelled_from_config(cfg) -> LabelledFolderDataset:
    """``data.source: folder``: ``root/<CLASS>/*.png|jpg|dcm``."""
    from cxrkit.data.base import require_path

    ds = LabelledFolderDataset(require_path(cfg))
    ds.accept_missing_modality = cfg.accept_missing_modality
    return ds


def files_from_config(cfg) -> ImageFilesDataset:
    """``data.source: files``: unlabelled image files or folders."""
    from cxrkit.data.base import require_path

    ds = ImageFilesDataset(require_path(cfg))
    ds.accept_missing_modality = cfg.accept_missing_modality
    return ds
