"""Inputs for prediction: files, folders (recursive) and in-memory arrays, prepared as in training.

Every input becomes a row (its source, name and, when it cannot be used, the reason); readable
ones become (S, S) uint8 images by the run's input spec. A bad file never stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.data.assess import MIN_SIDE, check_assessable
from cxrkit.data.decode import ImageReadError, NotAssessableError, array_to_grey, is_dicom_file, read_image
from cxrkit.data.folder import dicom_patient
from cxrkit.data.header import header_fields
from cxrkit.data.transforms import InputSpec, prepare_image
from cxrkit.evaluate.ood import OUT_OF_DISTRIBUTION  # noqa: F401 (the statuses of a row, in one place)

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


def split_array(arr: np.ndarray) -> list[np.ndarray]:
    """The images one array holds, by its shape; a ValueError for a shape that is no image.

    (H, W): one grey image. (H, W, C) with C in 1, 2, 3, 4: one image, channels last (grey, grey +
    alpha as ``np.asarray`` gives an LA picture, RGB, RGBA: colour as luma unless the channels are
    equal; alpha dropped). (N, H, W): N grey images, except when N is 3 or 4,
    which could be one channels-first colour image: refused as ambiguous. (N, H, W, C): N images.
    Anything else (0-d, 1-d, 5-d, (H, W, C) with 5 <= C < 8, C not 1-4 in a 4-D stack) is refused: it
    must never become thousands of rows. A last side under 8 px is no image width (models take >= 8).
    """
    shape = tuple(arr.shape)
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3 and shape[-1] in (1, 2, 3, 4):
        return [arr[..., 0] if shape[-1] <= 2 else arr]
    if arr.ndim == 3 and shape[0] in (3, 4):
        raise ValueError(
            f"an array of shape {shape} is ambiguous: {shape[0]} grey images or one channels-first "
            f"colour image? Pass a list of 2-D arrays for several images, or "
            f"np.moveaxis(a, 0, -1) (shape {(*shape[1:], shape[0])}) for one colour image"
        )
    if arr.ndim == 3 and shape[-1] < 8:
        raise ValueError(
            f"an array of shape {shape} looks like one image with {shape[-1]} channels: expected 1, 2, 3 "
            "or 4 channels (grey, grey+alpha, RGB, RGBA)"
        )
    if arr.ndim == 3:
        return list(arr)
    if arr.ndim == 4 and shape[-1] in (1, 2, 3, 4):
        return [a[..., 0] if shape[-1] <= 2 else a for a in arr]
    raise ValueError(
        f"an array of shape {shape} is not an image: expected (H, W), (H, W, 1|2|3|4), a stack (N, H, W) "
        "or (N, H, W, 1|2|3|4)"
    )


def expand_inputs(inputs: Input | Sequence[Input]) -> list[tuple[str, Path | np.ndarray]]:
    """(source name, path or array) per input; folders searched recursively; arrays by ``split_array``."""
    from cxrkit.data.folder import list_images

    items: Iterable[Input] = [inputs] if isinstance(inputs, (str, Path, np.ndarray)) else inputs
    out: list[tuple[str, Path | np.ndarray]] = []
    n_arr = 0
    for item in items:
        if isinstance(item, np.ndarray):
            for a in split_array(item):
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
    inputs: Input | Sequence[Input],
    spec: InputSpec,
    keep_originals: bool = False,
    progress: bool = False,
    accept_missing_modality: bool = False,
) -> PreparedInputs:
    """Decode and resize every input by ``spec``; unreadable ones keep a row with their reason."""
    return prepare_items(expand_inputs(inputs), spec, keep_originals, progress, accept_missing_modality)


def prepare_items(
    items: Sequence[Item],
    spec: InputSpec,
    keep_originals: bool = False,
    progress: bool | object = False,
    accept_missing_modality: bool = False,
    pool: Executor | None = None,
) -> PreparedInputs:
    """``prepare_inputs`` for items from ``expand_inputs`` (so a caller can go chunk by chunk).

    ``progress``: True for a bar of its own, or an open tqdm bar to advance. Every image must pass
    ``data.assess.check_assessable`` (the one assessability rule) or its row says why not.
    ``accept_missing_modality``: score DICOMs without a Modality tag (see ``read_image``).
    ``pool``: an executor that decodes and resizes the items in parallel (Pillow, pydicom's decoders
    and numpy release the GIL, so threads scale); rows keep the input order either way.
    """
    from tqdm.auto import tqdm

    bar = (
        progress
        if hasattr(progress, "update")
        else tqdm(total=len(items), desc="reading", unit="img", disable=not progress)
    )

    def one(item: Item) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
        return prepare_one(item[0], item[1], spec, accept_missing_modality, keep_originals)

    rows, images, ok, originals = [], [], [], []
    for k, (row, prepared, img) in enumerate(pool.map(one, items) if pool is not None else map(one, items)):
        bar.update(1)  # type: ignore[attr-defined]
        rows.append(row)
        if prepared is None:
            continue
        images.append(prepared)
        ok.append(k)
        if keep_originals:
            originals.append(img)
    if bar is not progress:
        bar.close()  # type: ignore[attr-defined]
    arr = np.stack(images) if images else np.zeros((0, spec.size, spec.size), np.uint8)
    return PreparedInputs(rows, arr, np.asarray(ok, dtype=np.int64), originals if keep_originals else None)


def prepare_one(
    source: str,
    item: Path | np.ndarray,
    spec: InputSpec,
    accept_missing_modality: bool = False,
    keep_original: bool = False,
) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """One input -> (its row, its (S, S) uint8 model input, the decoded image when ``keep_original``).

    The inputs are None for an unusable input; the full-size image is dropped here unless asked for,
    so a pool working ahead holds model-size images only.
    """
    name = item.name if isinstance(item, Path) else source
    row = {"source": source, "image_id": name, "patient_id": Path(name).stem, "error": "", "status": "ok"}
    try:
        if isinstance(item, Path) and item.is_dir() and os.access(item, os.R_OK | os.X_OK):
            raise ImageReadError(item, "a folder with no PNG/JPEG/DICOM files in it")
        if isinstance(item, Path) and is_dicom_file(item):  # by name, else by content
            row["patient_id"] = dicom_patient(item) or row["patient_id"]  # the PatientID tag
            row["header"] = header_fields(item)  # age, view, body part: the OOD header checks
        img = (
            read_image(item, accept_missing_modality=accept_missing_modality)
            if isinstance(item, Path)
            else array_to_grey(item, source)
        )
        check_assessable(img, source, min_side(spec))
    except ImageReadError as err:
        row["error"] = err.reason
        row["status"] = NOT_ASSESSABLE if isinstance(err, NotAssessableError) else UNREADABLE
        return row, None, None
    row.update(src_w=int(img.shape[1]), src_h=int(img.shape[0]))
    return row, prepare_image(img, spec), img if keep_original else None
