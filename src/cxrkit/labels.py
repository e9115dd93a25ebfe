"""The one label schema of cxrkit: the 14 NIH findings plus "No Finding", and every source's spelling.

Labels travel by name, never by column position: each source's labels are mapped here onto
``LABELS`` and aligned by name, with labels a source does not annotate set to NaN (unknown).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
"""The 14 ChestX-ray14 findings in the order of Wang et al. (CVPR 2017)."""

NO_FINDING = "No Finding"
LABELS: tuple[str, ...] = (*FINDINGS, NO_FINDING)
"""Canonical label list: the 14 findings then "No Finding" (15 in all)."""

CHESTMNIST_LABELS: tuple[str, ...] = (
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
)  # fmt: skip
"""ChestMNIST's label columns, by index (medmnist INFO["chestmnist"]["label"])."""

TFRECORD_LABEL_FEATURES: tuple[str, ...] = (
    "No Finding", "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema",
    "Emphysema", "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly",
    "Nodule", "Mass", "Hernia",
)  # fmt: skip
"""The 15 int64 label features of the Kaggle "NIH Chest X-rays TFRecords" shards."""

GOOGLE2019_COLUMNS: tuple[str, ...] = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
"""Expert labels of Majkowska et al. (Radiology 2019) on 4,374 NIH images, as YES/NO columns."""

# Every spelling seen in the sources, keyed by a normalised form (see ``_key``).
_ALIASES: dict[str, str] = {
    "pleural": "Pleural_Thickening",
    "pleural thickening": "Pleural_Thickening",
    "normal": NO_FINDING,
    "no finding": NO_FINDING,
    "nofinding": NO_FINDING,
    "effusions": "Effusion",
    "pleural effusion": "Effusion",
    "infiltrate": "Infiltration",
    "nodules": "Nodule",
}
for _name in LABELS:
    _ALIASES.setdefault(re.sub(r"[\s_\-]+", " ", _name.lower()).strip(), _name)


class UnknownLabelError(ValueError):
    """A label name that no source spelling maps to."""


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).lower()).strip()


def canonical_label(name: str, *, source: str = "label") -> str:
    """Map any known spelling (``pleural``, ``Pleural Thickening``, ``NORMAL``) to its canonical name."""
    found = _ALIASES.get(_key(name))
    if found is None:
        close = difflib.get_close_matches(_key(name), list(_ALIASES), n=8, cutoff=0.6)
        names = list(dict.fromkeys(_ALIASES[c] for c in close))[:3]  # aliases of one label: named once
        hint = f"; did you mean {', '.join(repr(n) for n in names)}?" if names else ""
        raise UnknownLabelError(f"unknown {source} {name!r}: expected one of {', '.join(LABELS)}{hint}")
    return found


def try_canonical_label(name: str) -> str | None:
    """Canonical name of ``name`` or None when it is not one of the 15 labels."""
    return _ALIASES.get(_key(name))


def parse_finding_labels(text: str, *, source: str = "Finding Labels") -> np.ndarray:
    """Parse an NIH ``Finding Labels`` cell (``"Cardiomegaly|Emphysema"``) into a 0/1 vector over LABELS."""
    out = np.zeros(len(LABELS), dtype=np.float32)
    for part in str(text).split("|"):
        if part.strip():
            out[LABELS.index(canonical_label(part, source=source))] = 1.0
    return out


def encode_finding_labels(texts: Iterable[str]) -> np.ndarray:
    """Vectorised ``parse_finding_labels`` for a column of cells: float32 (N, 15), 0/1."""
    import pandas as pd

    codes, uniques = pd.factorize(np.asarray(list(texts), dtype=object), use_na_sentinel=False)
    if len(codes) == 0:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return np.stack([parse_finding_labels("" if u is None else str(u)) for u in uniques])[codes]


def align_by_name(values: np.ndarray, names: Sequence[str], target: Sequence[str] = LABELS) -> np.ndarray:
    """Re-order columns of ``values`` (N, len(names)) by name onto ``target``; absent labels are NaN."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"values of shape {values.shape} do not match {len(names)} label names")
    canon = [canonical_label(n) for n in names]
    if len(set(canon)) != len(canon):
        raise ValueError(f"label names map to duplicates: {list(names)} -> {canon}")
    out = np.full((values.shape[0], len(target)), np.nan, dtype=np.float32)
    for j, name in enumerate(canon):
        if name in target:
            out[:, list(target).index(name)] = values[:, j]
    return out


def add_no_finding(values: np.ndarray) -> np.ndarray:
    """Fill the "No Finding" column where it is NaN: 1 when all 14 findings are known 0, else 0/NaN.

    A positive finding makes "No Finding" 0; all findings 0 makes it 1; otherwise it stays unknown.
    """
    out = np.array(values, dtype=np.float32, copy=True)
    f = out[:, : len(FINDINGS)]
    nf = out[:, len(FINDINGS)]
    missing = np.isnan(nf)
    any_pos = np.nansum(f, axis=1) > 0
    all_zero = np.all(f == 0, axis=1)
    nf[missing & any_pos] = 0.0
    nf[missing & all_zero] = 1.0
    return out


def google2019_to_labels(rows: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Map the Google 2019 expert YES/NO columns onto LABELS (N, 15).

    ``Pneumothorax`` maps directly. ``Nodule or mass`` = NO sets both Nodule and Mass to 0; YES
    cannot say which, so both stay NaN. Fracture and airspace opacity are not NIH labels.
    """
    missing = [c for c in ("Pneumothorax", "Nodule or mass") if c not in rows]
    if missing:
        raise KeyError(f"Google 2019 labels lack column(s) {missing}")
    n = len(rows["Pneumothorax"])
    out = np.full((n, len(LABELS)), np.nan, dtype=np.float32)

    def yes_no(col: str) -> np.ndarray:
        v = np.array([str(x).strip().upper() for x in rows[col]])
        bad = sorted(set(v) - {"YES", "NO"})
        if bad:
            raise ValueError(f"Google 2019 column {col!r} holds {bad}; expected YES or NO")
        return (v == "YES").astype(np.float32)

    out[:, LABELS.index("Pneumothorax")] = yes_no("Pneumothorax")
    nm = yes_no("Nodule or mass")
    for name in ("Nodule", "Mass"):
        out[:, LABELS.index(name)] = np.where(nm == 0, 0.0, np.nan)
    return out


def finding_columns(labels: Sequence[str]) -> list[int]:
    """Columns that macro/micro averages cover: every label except "No Finding" (all if that is the only one).

    The literature's ChestX-ray14 figure is the mean over the 14 findings; "No Finding" is the
    normal-vs-abnormal question and is reported on its own line.
    """
    cols = [j for j, name in enumerate(labels) if name != NO_FINDING]
    return cols or list(range(len(labels)))


def align_labels(
    site_labels: Sequence[str], site_targets: np.ndarray, run_labels: Sequence[str]
) -> tuple[np.ndarray, list[str], list[str]]:
    """(targets (N, len(run_labels)) in the run's order, NaN where the data lacks a label; the run's labels
    it lacks; its labels the run does not have), matched by name (any known spelling, own labels as given)."""
    names = [try_canonical_label(s) or s for s in site_labels]
    out = np.full((len(site_targets), len(run_labels)), np.nan, dtype=np.float32)
    missing = []
    for j, lab in enumerate(run_labels):
        if lab in names:
            out[:, j] = site_targets[:, names.index(lab)]
        else:
            missing.append(lab)
    ignored = [s for s, n in zip(site_labels, names, strict=True) if n not in run_labels]
    return out, missing, ignored
