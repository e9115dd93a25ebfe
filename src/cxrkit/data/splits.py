"""Patient-grouped, label-stratified splits; the official NIH split; split manifests.

No patient ever appears in two splits: every function here ends with ``check_no_patient_leak``.
Stratification is iterative (Sechidis et al. 2011) over patient groups: groups holding the rarest
labels are placed first, each into the split that most lacks that label, so rare findings such
as Hernia are spread in proportion even though whole patients move together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
Split = dict[str, np.ndarray]
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}


class PatientLeakError(AssertionError):
    """A patient found in more than one split."""


def check_no_patient_leak(patient_ids: Sequence[str] | np.ndarray, split: Split) -> None:
    """Raise PatientLeakError naming the patients that occur in two splits, or overlapping rows."""
    pids = np.asarray(patient_ids).astype(str)
    seen: dict[str, str] = {}
    rows: set[int] = set()
    for name, idx in split.items():
        dup = rows.intersection(idx.tolist())
        if dup:
            raise PatientLeakError(f"rows {sorted(dup)[:5]} appear in split {name!r} and another split")
        rows.update(idx.tolist())
        for p in np.unique(pids[idx]):
            if p in seen:
                raise PatientLeakError(f"patient {p} is in both {seen[p]!r} and {name!r}")
            seen[p] = name


def patient_split(
    patient_ids: Sequence[str] | np.ndarray,
    targets: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> Split:
    """Split rows into ``fractions`` by patient, stratified on ``targets`` (N, L; NaN = unknown)."""
    names = list(fractions)
    frac = np.array([fractions[n] for n in names], dtype=float)
    if (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"split fractions {dict(fractions)} must be >= 0 and sum to 1")
    pids = np.asarray(patient_ids).astype(str)
    # pragma: no mutate (next line) -- numpy reads any negative size as "the rest"
    y = np.asarray(targets, dtype=np.float64).reshape(len(pids), -1) == 1  # NaN (unknown) is not positive
    groups, inverse = np.unique(pids, return_inverse=True)
    g_pos = np.zeros((len(groups), y.shape[1]))
    np.add.at(g_pos, inverse, y)
    g_size = np.bincount(inverse, minlength=len(groups)).astype(float)

    rng = np.random.default_rng(seed)
    total_pos = g_pos.sum(0)
    need_pos = frac[:, None] * total_pos[None, :]
    need_size = frac * len(pids)
    rarity = np.where(g_pos > 0, total_pos[None, :], np.inf)  # per group: its labels' counts
    rarest = rarity.min(1, initial=np.inf)  # inf: no positive label (or no label columns at all)
    order = np.lexsort((rng.random(len(groups)), rarest))  # rare-label groups first, random ties
    assign = np.empty(len(groups), dtype=int)
    # A split asked for 0% never wins: the needs of the other splits add up to at least this group's
    # images (or positives), so one of them is above its need of 0.
    for g in order:
        if np.isfinite(rarest[g]):
            lab = int(np.argmin(rarity[g]))
            score = need_pos[:, lab]  # positives of its rarest label still missing, per split
        else:
            score = need_size
        best = np.flatnonzero(np.isclose(score, score.max()))
        best = best[np.isclose(need_size[best], need_size[best].max())]  # tie: most images missing
        k = int(rng.choice(best))
        assign[g] = k
        need_pos[k] -= g_pos[g]
        need_size[k] -= g_size[g]
    _fill_empty_splits(assign, frac, g_size)
    row_split = assign[inverse]
    split = {n: np.flatnonzero(row_split == k) for k, n in enumerate(names)}
    check_no_patient_leak(pids, split)
    return split


def _fill_empty_splits(assign: np.ndarray, frac: np.ndarray, g_size: np.ndarray) -> None:
    """Give each split with a positive fraction at least one patient, taken from the largest split.

    Greedy stratification sends every group to the biggest split when labels are very sparse
    (tiny data); a split asked for should not come back empty while patients allow.
    """
    for k in np.flatnonzero(frac > 0):
        if (assign == k).any():
            continue
        counts = np.bincount(assign, minlength=len(frac))
        donor = int(np.argmax(counts))
        if counts[donor] < 2:
            return
        members = np.flatnonzero(assign == donor)
        assign[members[np.argmin(g_size[members])]] = k


def split_from_column(
    meta: pd.DataFrame,
    column: str = "split",
    targets: np.ndarray | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """The split a source ships (NIH's train_val/test lists, ChestMNIST's train/val/test).

    A ``trainval`` part (NIH) is divided into train and val by patient, stratified.
    """
    if column not in meta.columns or meta[column].isna().all():
        raise ValueError(f"this dataset has no official split (no {column!r} column); use a patient split")
    col = meta[column].astype(object)
    unassigned = int(col.isna().sum())
    if unassigned:
        log.warning("%d images are in neither official list; left out of the split", unassigned)
    split: Split = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero((col == name).to_numpy())
        if len(idx):
            split[name] = idx
    trainval = np.flatnonzero((col == "trainval").to_numpy())
    if len(trainval):
        # pragma: no mutate (next line) -- without targets, any number of all-zero columns splits the same
        y = targets[trainval] if targets is not None else np.zeros((len(trainval), 0))
        sub = patient_split(
            meta["patient_id"].to_numpy()[trainval], y, {"train": 1 - val_fraction, "val": val_fraction}, seed
        )
        split["train"] = np.sort(np.concatenate([split.get("train", []), trainval[sub["train"]]]).astype(int))
        split["val"] = np.sort(np.concatenate([split.get("val", []), trainval[sub["val"]]]).astype(int))
    check_no_patient_leak(meta["patient_id"].to_numpy(), split)
    return split


def split_manifest(meta: pd.DataFrame, split: Split) -> pd.DataFrame:
    """One row per image in the split: image_id, patient_id, split."""
    parts = [
        pd.DataFrame(
            {
                "image_id": meta["image_id"].to_numpy()[idx],
                "patient_id": meta["patient_id"].to_numpy()[idx],
                "split": name,
            }
        )
        for name, idx in split.items()
    ]
    return pd.concat(parts, ignore_index=True)


def save_split_manifest(path: str | Path, meta: pd.DataFrame, split: Split) -> Path:
    """Write the split manifest CSV (saved beside every run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split_manifest(meta, split).to_csv(path, index=False)
    return path


def load_split_manifest(path: str | Path, meta: pd.DataFrame) -> Split:
    """Read a manifest back as row indices into ``meta``; unknown image IDs are an error."""
    man = pd.read_csv(path, dtype=str)
    pos = pd.Series(np.arange(len(meta)), index=meta["image_id"].astype(str))
    unknown = sorted(set(man["image_id"]) - set(pos.index))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} image IDs not in the dataset, e.g. {unknown[:3]}")
    split = {name: np.sort(pos[g["image_id"]].to_numpy()) for name, g in man.groupby("split", sort=False)}
    check_no_patient_leak(meta["patient_id"].to_numpy(), split)
    return split


def split_summary(meta: pd.DataFrame, split: Split, labels: Sequence[str]) -> pd.DataFrame:
    """Images, patients and positives per label for each split (rows: splits)."""
    rows = {}
    for name, idx in split.items():
        part = meta.iloc[idx]
        row = {"images": len(idx), "patients": part["patient_id"].nunique()}
        row.update({lab: int((part[lab] == 1).sum()) for lab in labels})
        rows[name] = row
    return pd.DataFrame(rows).T
