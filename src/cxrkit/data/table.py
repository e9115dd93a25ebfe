"""``data.source: table``: a CSV listing image files (PNG, JPEG or DICOM) and their labels.

The form a site's own labelled studies usually arrive in (an export from the RIS, a spreadsheet).
Columns:

- ``path`` (required): the image file, absolute or relative to the CSV's folder.
- labels, in one of two forms: a ``labels`` column of names separated by ``|`` (as NIH's Finding
  Labels: every one of the 15 labels is then known, "No Finding" or an empty cell meaning none), or
  one column per label holding 1 (present), 0 (absent) or nothing / -1 (unknown: not scored for
  that label; CheXpert's "uncertain" is -1). Column names are matched to the canonical labels by
  any known spelling (``NORMAL`` -> "No Finding"); other names are labels of their own.
- optional ``patient_id`` (else a DICOM's PatientID, else the file-name rule of class folders),
  ``age``, ``sex``, ``view``.

A file the CSV names that is missing or unreadable is not dropped here: the cache lists it as
unreadable, and reports show it as a row that was not scored.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.base import standard_meta
from cxrkit.data.folder import FileDataset, patient_keys
from cxrkit.labels import LABELS, NO_FINDING, UnknownLabelError, canonical_label, try_canonical_label

RESERVED = ("path", "image_id", "patient_id", "age", "sex", "view", "labels")
VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": np.nan, "-1": np.nan, "-1.0": np.nan}


def read_table(path: Path) -> pd.DataFrame:
    """The CSV as text (nothing guessed), with a clear error when it is unreadable or has no ``path``."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if "path" not in frame:
        raise ValueError(
            f"{path}: no 'path' column (found {', '.join(frame.columns) or 'none'}); expected path, then "
            "a 'labels' column or one 0/1 column per label"
        )
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    return frame


def _own_label(column: str, path: Path) -> str:
    """A column that is none of the 15 labels: a label of its own, unless it is one letter or so off a
    known one (``Efusion``), which is refused with the label it probably means."""
    close = difflib.get_close_matches(
        column.lower().replace("_", " "), [x.lower().replace("_", " ") for x in LABELS], 1, 0.85
    )
    if close:
        meant = next(x for x in LABELS if x.lower().replace("_", " ") == close[0])
        raise UnknownLabelError(
            f"{path}: column {column!r} is not a label cxrkit knows; did you mean {meant!r}? (rename it; a "
            "new label of the site's own keeps a name that is not a near-miss of a known one)"
        )
    return column


def label_columns(frame: pd.DataFrame, path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(labels, targets N x L with NaN unknown) from a ``labels`` column or 0/1 columns."""
    if "labels" in frame:
        targets = np.zeros((len(frame), len(LABELS)), dtype=np.float32)
        for i, cell in enumerate(frame["labels"]):
            names = {
                canonical_label(p, source=f"label in {path} row {i + 2}")
                for p in cell.split("|")
                if p.strip()
            }
            if NO_FINDING in names and len(names) > 1:
                raise ValueError(
                    f"{path}: row {i + 2}: {cell!r} names a finding and No Finding; expected one or the other"
                )
            for name in names - {NO_FINDING}:
                targets[i, LABELS.index(name)] = 1.0
        # No Finding (any spelling: "NORMAL", "no finding") or an empty cell: no finding at all
        targets[:, LABELS.index(NO_FINDING)] = (targets.sum(1) == 0).astype(np.float32)
        return tuple(LABELS), targets
    columns = [c for c in frame.columns if c not in RESERVED]
    if not columns:
        raise ValueError(f"{path}: no label columns; expected a 'labels' column or one 0/1 column per label")
    names = [try_canonical_label(c) or _own_label(c, path) for c in columns]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"{path}: columns {', '.join(c for c, n in zip(columns, names, strict=True) if n in dup)} "
            f"all mean {', '.join(dup)}"
        )
    targets = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        cells = frame[col].str.strip()
        bad = ~cells.isin(list(VALUES))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: row {i + 2}, column {col!r}: {cells.iat[i]!r}; expected 1, 0, -1 or empty"
            )
        targets[:, j] = cells.map(VALUES).to_numpy(dtype=np.float32)
    return tuple(names), targets


def table_patients(frame: pd.DataFrame, paths: list[Path]) -> tuple[list[str], list[str]]:
    """Each row's patient: the ``patient_id`` cell, else its DICOM PatientID or file-name rule."""
    given = frame["patient_id"].str.strip().tolist() if "patient_id" in frame else [""] * len(frame)
    missing = [i for i, p in enumerate(given) if not p]
    found, found_rule = patient_keys([paths[i] for i in missing]) if missing else ([], [])
    patients, rule = list(given), ["csv"] * len(given)
    for i, pid, r in zip(missing, found, found_rule, strict=True):
        patients[i], rule[i] = pid, r
    return patients, rule


class TableDataset(FileDataset):
    """Images and labels listed in a CSV (see the module docstring)."""

    source = "table"

    def __init__(self, csv: str | Path) -> None:
        self.csv = Path(csv).resolve()
        if not self.csv.is_file():
            raise FileNotFoundError(f"{self.csv}: no such CSV file")
        frame = read_table(self.csv)
        labels, targets = label_columns(frame, self.csv)
        paths = [Path(p) if Path(p).is_absolute() else self.csv.parent / p for p in frame["path"]]
        empty = [i for i, p in enumerate(frame["path"]) if not p.strip()]
        if empty:
            raise ValueError(f"{self.csv}: row {empty[0] + 2} has an empty path")
        patients, rule = table_patients(frame, paths)
        extra = {c: frame[c].replace("", np.nan).to_numpy() for c in ("sex", "view") if c in frame}
        if "age" in frame:
            extra["age"] = pd.to_numeric(frame["age"], errors="coerce").to_numpy()
        ids = frame["image_id"].tolist() if "image_id" in frame else [str(p) for p in frame["path"]]
        if len(set(ids)) != len(ids):
            dup = pd.Series(ids)[pd.Series(ids).duplicated()].iat[0]
            raise ValueError(f"{self.csv}: image {dup!r} is listed twice")
        meta = standard_meta(
            ids, patients, targets, labels, path=[str(p) for p in paths], patient_source=rule, **extra
        )
        super().__init__(meta, labels, task="multilabel")


def from_config(cfg) -> TableDataset:
    """``data.source: table``: ``path`` is the CSV."""
    from cxrkit.data.base import require_path

    ds = TableDataset(require_path(cfg))
    ds.accept_missing_modality = cfg.accept_missing_modality
    return ds
