"""Patient-grouped, label-stratified splits; the official NIH split; split manifests.

No patient ever appears in two splits: every function here ends with ``check_no_patient_leak``,
which compares the data's own patient key (``meta["patient_id"]``: for DICOM files their
PatientID). Stratification is iterative (Sechidis et al. 2011) over patient groups: groups
holding the rarest labels are placed first, each into the split that most lacks that label, so
rare findings such as Hernia are spread in proportion even though whole patients move together.

A run's ``split.csv`` (image_id, patient_id, split and, for runs, a CRC-32 of each image's cached
pixels) is the one truth about its split: reading it back keeps every known image where it was,
puts images added since in no split, leaves removed ones out and reports the difference.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.outputs import read_csv, write_csv

log = logging.getLogger(__name__)
Partition = dict[str, np.ndarray]  # split name (train, val, test) -> row indices: every image in one split
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}
DIGEST = "pixels_crc32"  # split.csv column: CRC-32 of the image's cached pixels, to notice altered images
MANIFEST_COLUMNS = ("image_id", "patient_id", "split")


class PatientLeakError(ValueError, AssertionError):
    """A patient found in more than one split (a ValueError: bad data or an edited split file)."""


def check_no_patient_leak(patient_ids: Sequence[str] | np.ndarray, partition: Partition) -> None:
    """Raise PatientLeakError naming the patients that occur in two splits, or overlapping rows."""
    pids = np.asarray(patient_ids).astype(str)
    seen: dict[str, str] = {}
    rows: set[int] = set()
    leaks: list[tuple[str, str, str]] = []
    for name, idx in partition.items():
        dup = rows.intersection(idx.tolist())
        if dup:
            raise PatientLeakError(f"rows {sorted(dup)[:5]} appear in split {name!r} and another split")
        rows.update(idx.tolist())
        for p in np.unique(pids[idx]):
            if p in seen:
                leaks.append((p, seen[p], name))
            else:
                seen[p] = name
    if len(leaks) == 1:
        p, a, b = leaks[0]
        raise PatientLeakError(f"patient {p} is in both {a!r} and {b!r}")
    if leaks:
        shown = "; ".join(f"patient {p} in {a!r} and {b!r}" for p, a, b in leaks[:5])
        more = f" and {len(leaks) - 5} more" if len(leaks) > 5 else ""
        raise PatientLeakError(f"{len(leaks)} patients are in two splits: {shown}{more}")


def patient_split(
    patient_ids: Sequence[str] | np.ndarray,
    targets: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> Partition:
    """Partition rows into ``fractions`` by patient, stratified on ``targets`` (N, L; NaN = unknown)."""
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
    partition = {n: np.flatnonzero(row_split == k) for k, n in enumerate(names)}
    check_no_patient_leak(pids, partition)
    return partition


def kfold_folds(
    patient_ids: Sequence[str] | np.ndarray, targets: np.ndarray, folds: int, test: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Each row's fold, 1..``folds``, or 0 for the held-out ``test`` share: patient-grouped, stratified.

    One ``patient_split`` into ``test`` and ``folds`` equal parts, so every fold holds whole patients
    and a share of each label's positives close to 1/folds of the rest.
    """
    if folds < 2:
        raise ValueError(f"kfold needs at least 2 folds (got {folds})")
    patients = len(np.unique(np.asarray(patient_ids).astype(str)))
    needed = folds + (1 if test > 0 else 0)
    if patients < needed:
        raise ValueError(
            f"kfold: {folds} folds"
            + (" and a test share" if test > 0 else "")
            + f" need at least {needed} patients (each fold holds whole patients); the data has "
            f"{patients}: use partition.folds <= {max(patients - (needed - folds), 1)} or more data"
        )
    rest = (1.0 - test) / folds
    fractions = {"test": test, **{f"fold{k}": rest for k in range(1, folds + 1)}}
    parts = patient_split(patient_ids, targets, fractions, seed)
    out = np.zeros(len(np.asarray(patient_ids)), dtype=int)
    for k in range(1, folds + 1):
        out[parts[f"fold{k}"]] = k
    return out


def fold_split(fold_of: np.ndarray, fold: int) -> Partition:
    """The split of fold ``fold`` (1..K): val is that fold, train the other folds, test the held-out rows.

    ``fold`` 0 (the K-fold parent run): val is every fold's rows (scored out of fold), no train.
    """
    fold_of = np.asarray(fold_of)
    cv = fold_of > 0
    partition: Partition = {"val": np.flatnonzero(cv if fold == 0 else fold_of == fold)}
    if fold:
        partition["train"] = np.flatnonzero(cv & (fold_of != fold))
    test = np.flatnonzero(~cv)
    if len(test):
        partition["test"] = test
    return partition


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
) -> Partition:
    """The split a source ships (NIH's train_val/test lists, ChestMNIST's train/val/test).

    A ``trainval`` part (NIH) is divided into train and val by patient, stratified.
    """
    if column not in meta.columns or meta[column].isna().all():
        raise ValueError(f"this dataset has no official split (no {column!r} column); use a patient split")
    col = meta[column].astype(object)
    unassigned = int(col.isna().sum())
    if unassigned:
        log.warning("%d images are in neither official list; left out of the split", unassigned)
    partition: Partition = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero((col == name).to_numpy())
        if len(idx):
            partition[name] = idx
    trainval = np.flatnonzero((col == "trainval").to_numpy())
    if len(trainval):
        # pragma: no mutate (next line) -- without targets, any number of all-zero columns splits the same
        y = targets[trainval] if targets is not None else np.zeros((len(trainval), 0))
        sub = patient_split(
            meta["patient_id"].to_numpy()[trainval], y, {"train": 1 - val_fraction, "val": val_fraction}, seed
        )
        partition["train"] = np.sort(
            np.concatenate([partition.get("train", []), trainval[sub["train"]]]).astype(int)
        )
        partition["val"] = np.sort(
            np.concatenate([partition.get("val", []), trainval[sub["val"]]]).astype(int)
        )
    check_no_patient_leak(meta["patient_id"].to_numpy(), partition)
    return partition


def pixel_digests(images: np.ndarray, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """CRC-32 (8 hex digits) of the pixels of ``images[rows]``: how split.csv notices altered images.

    CRC-32 runs at about 2 GB/s (a 224 px NIH cache in a few seconds); it detects changes, it is
    not meant to resist forgery.
    """
    return np.array([f"{zlib.crc32(np.ascontiguousarray(images[int(r)])):08x}" for r in rows], dtype=object)


def split_manifest(
    meta: pd.DataFrame, partition: Partition, images: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per image in the split: image_id, patient_id, split (and ``pixels_crc32`` given ``images``)."""
    parts = []
    for name, idx in partition.items():
        part = pd.DataFrame(
            {
                "image_id": meta["image_id"].to_numpy()[idx],
                "patient_id": meta["patient_id"].to_numpy()[idx],
                "split": name,
            }
        )
        if images is not None:
            part[DIGEST] = pixel_digests(images, idx)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def save_split_manifest(
    path: str | Path, meta: pd.DataFrame, partition: Partition, images: np.ndarray | None = None
) -> Path:
    """Write the split manifest CSV (saved beside every run; ``images``: add each image's pixel CRC-32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(path, split_manifest(meta, partition, images), index=False)


def read_split_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest as written (text exactly as saved); an error naming the file when it is malformed.

    The file is checked on its own too: an image listed twice, or a patient (by its saved key) in
    two splits, means the file was edited or is corrupt.
    """
    try:
        man = read_csv(path, dtype=str, na_filter=False)  # "NA" or "null" is an image id, not missing
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: empty split file; expected columns {', '.join(MANIFEST_COLUMNS)}"
        ) from None
    missing = [c for c in MANIFEST_COLUMNS if c not in man.columns]
    if missing:
        raise ValueError(
            f"{path}: split file lacks column(s) {missing}; expected {', '.join(MANIFEST_COLUMNS)}"
        )
    twice = man["image_id"][man["image_id"].duplicated()]
    if len(twice):
        first = twice.iat[0]
        where = sorted(set(man.loc[man["image_id"] == first, "split"]))
        raise ValueError(
            f"{path}: {len(twice)} image(s) listed twice, e.g. {first!r} in {where}; expected once"
        )
    groups = {name: g.index.to_numpy() for name, g in man.groupby("split", sort=False)}
    try:
        check_no_patient_leak(man["patient_id"].to_numpy(), groups)
    except PatientLeakError as err:
        raise PatientLeakError(f"{path}: {err} (saved patient key)") from None
    return man


@dataclass(frozen=True)
class SplitChanges:
    """How the data differs from a saved manifest: images added, removed, altered; patient keys changed."""

    added: int = 0
    removed: int = 0
    altered: int = 0
    rekeyed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.altered or self.rekeyed)

    def message(self) -> str:
        """One log line: ``data changed since the run was split: 3 images added (in no split), ...``."""
        parts = [
            f"{n} image{'s' if n != 1 else ''} {what}"
            for n, what in (
                (self.added, "added (in no split)"),
                (self.removed, "removed (left out)"),
                (self.altered, "altered (kept in its split)"),
                (self.rekeyed, "with another patient key now"),
            )
            if n
        ]
        return "data changed since the run was split: " + ", ".join(parts)


def compare_manifest(
    man: pd.DataFrame, meta: pd.DataFrame, images: np.ndarray | None = None
) -> tuple[SplitChanges, np.ndarray]:
    """(changes, row in ``meta`` of each manifest row or -1 if removed); altered needs ``images``, CRCs."""
    pos = pd.Series(np.arange(len(meta)), index=meta["image_id"].astype(str))
    pos = pos[~pos.index.duplicated()]
    rows = pos.reindex(man["image_id"]).fillna(-1).to_numpy(dtype=np.int64)
    known = rows >= 0
    altered = 0
    if images is not None and DIGEST in man.columns:
        saved = man[DIGEST].to_numpy(dtype=object)
        check = known & (saved != "")
        altered = int((pixel_digests(images, rows[check]) != saved[check]).sum())
    rekeyed = int(
        (meta["patient_id"].astype(str).to_numpy()[rows[known]] != man["patient_id"].to_numpy()[known]).sum()
    )
    added = len(set(pos.index) - set(man["image_id"]))
    return SplitChanges(added, int((~known).sum()), altered, rekeyed), rows


def load_split_manifest(
    path: str | Path,
    meta: pd.DataFrame,
    images: np.ndarray | None = None,
    report: Callable[[str], None] = log.warning,
) -> Partition:
    """Read a manifest back as row indices into ``meta``, every known image in its saved split.

    Images added since are in no split and removed ones are left out (``report`` gets one line
    saying so); ``images`` (the rows of ``meta``) lets altered images be counted too. A split
    left without any image, or a patient (by the data's key) in two splits, is a ValueError.
    """
    man = read_split_manifest(path)
    changes, rows = compare_manifest(man, meta, images)
    if changes:
        report(f"{path}: {changes.message()}")
    partition: Partition = {}
    for name, g in man.groupby("split", sort=False):
        idx = rows[g.index.to_numpy()]
        if not (idx >= 0).any():
            raise ValueError(
                f"{path}: none of the {len(idx)} images of split {name!r} is in the data any more; "
                "expected the run's data (check data.path, or train a new run)"
            )
        partition[str(name)] = np.sort(idx[idx >= 0])
    try:
        check_no_patient_leak(meta["patient_id"].to_numpy(), partition)
    except PatientLeakError as err:
        raise PatientLeakError(
            f"{path}: {err} by the data's patient key (the split file was edited or the patient rule changed)"
        ) from None
    return partition


def split_summary(meta: pd.DataFrame, partition: Partition, labels: Sequence[str]) -> pd.DataFrame:
    """Images, patients and positives per label for each split (rows: splits)."""
    rows = {}
    for name, idx in partition.items():
        part = meta.iloc[idx]
        row = {"images": len(idx), "patients": part["patient_id"].nunique()}
        row.update({lab: int((part[lab] == 1).sum()) for lab in labels})
        rows[name] = row
    return pd.DataFrame(rows).T
