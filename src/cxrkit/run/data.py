"""A run's data: its dataset, prepared cache, the labels it trains on, their targets and its partition.

Training builds it from a RunConfig; resuming, evaluation, triage and localization rebuild it
from the run's saved ``config.yaml`` and ``split.csv``, never a new split (re-scoring a split
needs the source data; predicting on new images does not: see ``run.model``). ``check_start``
validates what a run asks of its dataset before any cache is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.config import PartitionConfig, RunConfig, build_run_config, load_yaml
from cxrkit.data import build_dataset
from cxrkit.data.base import XRayDataset
from cxrkit.data.cache import CachedDataset, PrepareResult, cache_folder, cache_key, prepare_cache
from cxrkit.data.splits import (
    Partition,
    check_no_patient_leak,
    fold_split,
    kfold_folds,
    load_split_manifest,
    patient_split,
    split_from_column,
)
from cxrkit.data.transforms import to_model_input
from cxrkit.labels import align_labels, try_canonical_label
from cxrkit.run import files
from cxrkit.run.lineage import read_lineage

Log = Callable[[str], None]


@dataclass
class TrainData:
    """A prepared cache, the labels trained on, their targets and the partition (split name -> rows)."""

    cache: CachedDataset
    labels: tuple[str, ...]
    targets: np.ndarray  # (N, L) float32, NaN unknown
    partition: Partition
    task: str

    def batch(self, idx: np.ndarray, device=None, change: Callable[[np.ndarray], np.ndarray] | None = None):
        """Images (B, 1, S, S) in [0, 1] and targets (B, L) for rows ``idx`` (read in sorted order).

        ``change`` maps the uint8 images first (photometric augmentation, an acquisition shift).
        """
        import torch

        idx = np.sort(idx)
        images = self.cache.images[idx]
        x = to_model_input(change(np.asarray(images)) if change is not None else images, device)
        return x, torch.from_numpy(self.targets[idx]).to(x.device)


def select_labels(available: tuple[str, ...], wanted: tuple[str, ...]) -> list[int]:
    """Columns of ``wanted`` labels (any spelling) among ``available``; all when none is given."""
    if not wanted:
        return list(range(len(available)))
    out = []
    for w in wanted:
        name = try_canonical_label(w) or w
        if name not in available:
            raise ValueError(f"train.labels: {w!r} is not a label of this dataset ({', '.join(available)})")
        out.append(available.index(name))
    return out


def check_start(cfg: RunConfig, ds: XRayDataset) -> list[int]:
    """Columns of the labels trained on; a ValueError (before any cache) if labels or loss do not fit."""
    cols = select_labels(ds.labels, cfg.train.labels)
    if cfg.train.loss == "ce" and ds.task not in ("binary", "multiclass"):
        raise ValueError("loss ce needs a single-label dataset (class folders); use bce for multi-label")
    return cols


def is_ensemble(scfg: PartitionConfig) -> bool:
    """Whether a run with this partition is a K-fold parent: one model per fold, predicting their mean."""
    return scfg.method == "kfold" and scfg.fold == 0


def needed_parts(scfg: PartitionConfig) -> tuple[str, ...]:
    """The parts a run's split must hold: val only for a K-fold parent (out-of-fold images) and for a
    site-calibrated run (``train`` 0: its weights come from the parent, its val is the calibration part)."""
    return ("val",) if is_ensemble(scfg) or scfg.train == 0 else ("train", "val")


def make_split(meta: pd.DataFrame, targets: np.ndarray, scfg: PartitionConfig) -> Partition:
    """Patient-grouped stratified split, the source's official one, or one fold of a K-fold split.

    Train and val must exist (a K-fold parent, ``fold`` 0, has val only: its out-of-fold images).
    """
    if scfg.method == "official":
        partition = split_from_column(meta, targets=targets, val_fraction=scfg.val, seed=scfg.seed)
    elif scfg.method == "patient":
        partition = patient_split(meta["patient_id"].to_numpy(), targets, scfg.fractions(), scfg.seed)
    elif scfg.method == "kfold":
        folds = kfold_folds(meta["patient_id"].to_numpy(), targets, scfg.folds, scfg.test, scfg.seed)
        partition = fold_split(folds, scfg.fold)
        check_no_patient_leak(meta["patient_id"].to_numpy(), partition)
    else:
        raise ValueError(f"partition.method {scfg.method!r}: expected patient, official or kfold")
    for part in ("train", "val") if not is_ensemble(scfg) else ("val",):  # training needs its train part
        if len(partition.get(part, [])) == 0:
            raise ValueError(
                f"the partition has no {part} images; use more data or other partition fractions"
            )
    return partition


def locate_cache(cfg: RunConfig, ds: XRayDataset) -> tuple[Path, str]:
    """(cache folder, key) of ``ds`` at the config's size and mode (shared with ``cxr prepare``)."""
    key = cache_key(ds, cfg.prepare.size, cfg.prepare.mode)  # type: ignore[arg-type]
    return cache_folder(cfg.cache_dir, ds.source, cfg.prepare.size, cfg.prepare.mode, key), key


def build_cache(
    cfg: RunConfig, ds: XRayDataset, path: Path, key: str, log: Log, progress: bool | None = None
) -> PrepareResult:
    """Build the cache at ``path`` unless an identical one is there; log what happened."""
    p = cfg.prepare
    res = prepare_cache(
        ds,
        path,
        size=p.size,
        mode=p.mode,  # type: ignore[arg-type]
        workers=p.workers or None,
        progress=cfg.train.progress if progress is None else progress,
        force=p.force,
        key=key,
    )
    log(
        f"data: {ds.summary()}; cache {'reused' if res.reused else 'built'} at {path}"
        + (f" ({len(res.failures)} unreadable files skipped)" if res.failures else "")
    )
    return res


def saved_split(run_dir: Path) -> Path:
    """The run's ``split.csv``; FileNotFoundError naming it when it is missing."""
    path = Path(run_dir) / files.SPLIT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run's split cannot be recovered")
    return path


def load_saved_split(path: Path, cache: CachedDataset, log: Log | None = None) -> Partition:
    """A run's saved split over ``cache``: known images where they were, new ones in none.

    How the data changed since is one line to ``log`` (without one: a logging warning).
    """
    if log is None:
        return load_split_manifest(path, cache.meta, cache.images)
    return load_split_manifest(path, cache.meta, cache.images, report=log)


def open_data(
    cfg: RunConfig,
    path: Path,
    split_file: Path | None = None,
    log: Log | None = None,
    labels: tuple[str, ...] | None = None,
) -> TrainData:
    """The prepared cache at ``path`` with the config's labels and a new split, or ``split_file``'s.

    ``labels``: train on exactly these, in this order, matched by name (a fine-tuned run keeps its
    parent's outputs): those the data lacks are unknown (NaN, masked by every loss), others dropped.
    """
    cache = CachedDataset(path)
    cols = check_start(cfg, cache)
    if labels is None:
        targets = cache.targets()[:, cols]
    else:
        targets, missing, _ = align_labels(cache.labels, cache.targets(), labels)
        if len(missing) == len(labels):
            raise ValueError(
                f"{cfg.data.path}: none of the labels trained on ({', '.join(labels)}) is among the data's "
                f"({', '.join(cache.labels) or 'none'})"
            )
    task = cache.task if cfg.train.loss == "ce" else "multilabel"
    if split_file is None:
        partition = make_split(cache.meta, targets, cfg.partition)
    else:
        partition = load_saved_split(split_file, cache, log)
        lacking = [p for p in needed_parts(cfg.partition) if p not in partition]
        if lacking:
            raise ValueError(f"{split_file}: no {' or '.join(lacking)} images; expected a run's split file")
    names = tuple(labels) if labels is not None else tuple(cache.labels[c] for c in cols)
    return TrainData(cache, names, targets, partition, task)


def prepare_data(cfg: RunConfig, log: Log = lambda _m: None) -> TrainData:
    """Dataset -> checks -> cache (built once, reused after) -> labels, targets and a new partition."""
    ds = build_dataset(cfg.data)
    check_start(cfg, ds)
    path, key = locate_cache(cfg, ds)
    build_cache(cfg, ds, path, key, log)
    return open_data(cfg, path)


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """The config with its data paths and cache folder made absolute, as saved with a run.

    A run is then re-scored (or resumed) from any working directory, not only the one it was
    trained in; paths that do not exist are left as given.
    """
    import dataclasses

    def fix(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p and Path(p).exists() else p

    d = cfg.data
    data = dataclasses.replace(d, path=fix(d.path), csv=fix(d.csv), bbox_csv=fix(d.bbox_csv))
    return dataclasses.replace(cfg, data=data, cache_dir=str(Path(cfg.cache_dir).resolve()))


def load_run_config(run_dir: Path, overrides: dict | None = None) -> RunConfig:
    """The resolved config saved in a run folder, with optional ``section.key`` overrides."""
    return build_run_config(load_yaml(Path(run_dir) / files.CONFIG), overrides)


def load_run_data(run_dir: Path, log: Log | None = None) -> TrainData:
    """A run's data as trained: its config's source and cache, and its saved split (never a new one).

    Images added since are in no split, removed ones are left out; the difference is one line to
    ``log`` (or a logging warning). A patient in two splits by today's patient key is an error. A
    fine-tuned run's labels are its parent's (``init.json``), whichever of them its data has.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    split_file = saved_split(run_dir)
    try:
        ds = build_dataset(cfg.data)
        check_start(cfg, ds)
        path, key = locate_cache(cfg, ds)
        build_cache(cfg, ds, path, key, log or (lambda _m: None))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{run_dir}: the run's training data is needed to score its splits and is not available "
            f"({err}); predicting on new images does not need it (cxr predict)"
        ) from None
    lineage = read_lineage(run_dir)  # a fine-tuned run: its parent's labels, in their order
    return open_data(cfg, path, split_file, log, lineage.labels if lineage else None)
