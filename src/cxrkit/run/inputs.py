"""Inputs for prediction: files, folders (recursive) and in-memory arrays, prepared as in training.

Every input becomes a row (its source, name and, when it cannot be used, the reason); readable
ones become (S, S) uint8 images by the run's input spec. A bad file never stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.data.decode import (
    MIN_SIDE,
    ImageReadError,
    NotAssessableError,
    array_to_grey,
    check_assessable,
    read_image,
)
from cxrkit.data.folder import DICOM_SUFFIXES, dicom_patient
from cxrkit.data.transforms import InputSpec, prepare_image

Input = str | Path | np.ndarray
UNREADABLE, NOT_ASSESSABLE = "unreadable", "not assessable"  # row status of an input that was not scored


def min_side(spec: InputSpec) -> int:
    """The shortest side an input may have: ``MIN_SIDE``, or the model's own input size when smaller."""
    return min(MIN_SIDE, spec.size)


def manual_read_note(status: str, reason: str) -> str:
    """What a worklist says of an input that was not scored: "unreadable: REASON - read manually"."""
    return f"{status}: {reason} \u2014 read manually"


@dataclass
class PreparedInputs:
    """``rows`` (one dict per input), ``images`` (K, S, S) uint8 for the readable ones at ``ok`` rows."""

    rows: list[dict]
    images: np.ndarray
    ok: np.ndarray  # (K,) row numbers of the readable inputs
    originals: list[np.ndarray] | None = None  # decoded full-size images of the ok rows, when asked for

    def rows_frame(self):
        """The readable rows (image_id, patient_id, path, src_w, src_h) as a DataFrame, in ``ok`` order."""
        import pandas as pd

        ok = [self.rows[k] for k in self.ok]
        return pd.DataFrame(
            {
                "image_id": [r["image_id"] for r in ok],
                "patient_id": [r["patient_id"] for r in ok],
                "path": [r["source"] for r in ok],
                "src_w": [r["src_w"] for r in ok],
                "src_h": [r["src_h"] for r in ok],
            }
        )

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(source, reason) of every input that could not be used."""
        return [(r["source"], r["error"]) for r in self.rows if r["error"]]

    def failures_frame(self):
        """The inputs that were not scored: source, image_id, patient_id, status, reason (a DataFrame)."""
        import pandas as pd

        bad = [r for r in self.rows if r["error"]]
        return pd.DataFrame(
            {
                "path": [r["source"] for r in bad],
                "image_id": [r["image_id"] for r in bad],
                "patient_id": [r["patient_id"] for r in bad],
                "status": [r["status"] for r in bad],
                "reason": [r["error"] for r in bad],
            }
        )


def expand_inputs(inputs: Input | Sequence[Input]) -> list[tuple[str, Path | np.ndarray]]:
    """(source name, path or array) for each input; folders searched recursively; arrays split into images.

    A 2-D array is one image, (H, W, 3|4) one colour image, (N, H, W) or (N, H, W, 3|4) N images.
    """
    from cxrkit.data.folder import list_images

    items: Iterable[Input] = [inputs] if isinstance(inputs, (str, Path, np.ndarray)) else inputs
    out: list[tuple[str, Path | np.ndarray]] = []
    n_arr = 0
    for item in items:
        if isinstance(item, np.ndarray):
            one = item.ndim == 2 or (item.ndim == 3 and item.shape[-1] in (3, 4) and item.shape[0] > 4)
            for a in [item] if one else list(item):
                out.append((f"array[{n_arr}]", a))
                n_arr += 1
            continue
        if not isinstance(item, (str, Path)):
            raise TypeError(
                f"an input of type {type(item).__name__}: expected a file or folder path "
                "or a numpy array (np.asarray(pil_image) for a PIL image)"
            )
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            out.extend((str(f), f) for f in found)
            if not found:  # a row that says so; the other inputs go on
                out.append((str(p), p))
        else:
            out.append((str(p), p))  # a missing file becomes an error row, not an exception
    if not out:
        raise ValueError("nothing to predict: no inputs given")
    return out


Item = tuple[str, Path | np.ndarray]


def prepare_inputs(
    inputs: Input | Sequence[Input], spec: InputSpec, keep_originals: bool = False, progress: bool = False
) -> PreparedInputs:
    """Decode and resize every input by ``spec``; unreadable ones keep a row with their reason."""
    return prepare_items(expand_inputs(inputs), spec, keep_originals, progress)


def prepare_items(
    items: Sequence[Item], spec: InputSpec, keep_originals: bool = False, progress: bool | object = False
) -> PreparedInputs:
    """``prepare_inputs`` for items from ``expand_inputs`` (so a caller can go chunk by chunk).

    ``progress``: True for a bar of its own, or an open tqdm bar to advance.
    """
    from tqdm.auto import tqdm

    bar = (
        progress
        if hasattr(progress, "update")
        else tqdm(total=len(items), desc="reading", unit="img", disable=not progress)
    )
    rows, images, ok, originals = [], [], [], []
    for k, (source, item) in enumerate(items):
        bar.update(1)  # type: ignore[attr-defined]
        name = item.name if isinstance(item, Path) else source
        row = {"source": source, "image_id": name, "patient_id": Path(name).stem, "error": "", "status": "ok"}
        try:
            if isinstance(item, Path) and item.is_dir() and os.access(item, os.R_OK | os.X_OK):
                raise ImageReadError(item, "a folder with no PNG/JPEG/DICOM files in it")
            if isinstance(item, Path) and item.suffix.lower() in DICOM_SUFFIXES:
                row["patient_id"] = dicom_patient(item) or row["patient_id"]  # the PatientID tag
            img = read_image(item) if isinstance(item, Path) else array_to_grey(item, source)
            check_assessable(img, source, min_side(spec))
        except ImageReadError as err:
            row["error"] = err.reason
            row["status"] = NOT_ASSESSABLE if isinstance(err, NotAssessableError) else UNREADABLE
            rows.append(row)
            continue
        row.update(src_w=int(img.shape[1]), src_h=int(img.shape[0]))
        images.append(prepare_image(img, spec))
        ok.append(k)
        if keep_originals:
            originals.append(img)
        rows.append(row)
    if bar is not progress:
        bar.close()  # type: ignore[attr-defined]
    arr = np.stack(images) if images else np.zeros((0, spec.size, spec.size), np.uint8)
    return PreparedInputs(rows, arr, np.asarray(ok, dtype=np.int64), originals if keep_originals else None)
