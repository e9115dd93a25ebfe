"""Patient-grouped K-fold cross-validation: one run per fold, and a parent run that is their ensemble.

``partition.method: kfold`` trains ``fold-1`` .. ``fold-K`` inside the parent folder, each an ordinary
run validating on its own fold (``partition.fold: k``), then writes the parent: ``config.yaml``,
``split.csv`` (val: every fold's images, test: the held-out share), ``cv.json`` (each fold's
validation macro AUC at its best epoch, their mean and sd, and the pooled out-of-fold AUC), ``summary.json``
(out-of-fold metrics, total training time) and ``model.json``,
whose thresholds, calibration and operating point are fitted on the out-of-fold logits (each image
scored by the fold model that never trained on it). Loaded, the parent predicts with the folds'
average logits. ``--resume PARENT`` finishes unfinished folds and rebuilds the parent.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cxrkit.config import RunConfig
from cxrkit.data.splits import save_split_manifest
from cxrkit.evaluate.calibration import logits_to_probs
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.outputs import read_json, write_json, write_text
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData, absolute_paths, prepare_data
from cxrkit.run.model import RunModel, split_logits
from cxrkit.run.package import build_package, write_package
from cxrkit.training.record import data_summary, patient_ids

CV = files.CV


def fold_name(k: int) -> str:
    """The folder of fold ``k`` (1-based) inside the parent run."""
    return f"fold-{k}"


def fold_config(cfg: RunConfig, parent: Path, k: int) -> RunConfig:
    """Fold ``k``'s config: the parent's, validating on fold k, written inside the parent folder."""
    partition = dataclasses.replace(cfg.partition, fold=k)
    return dataclasses.replace(cfg, partition=partition, out=str(parent), name=fold_name(k))


def fold_state(parent: Path, k: int) -> str:
    """done (model.json written), started (a checkpoint to resume) or new."""
    folder = parent / fold_name(k)
    if (folder / files.PACKAGE).is_file():
        return "done"
    if (folder / files.LAST).is_file():
        return "started"
    return "new"


def cv_summary(aucs: list[float], monitored: list[float], monitor: str, oof_auc: float) -> dict:
    """Each fold's clean validation macro AUC at its best epoch, their mean and sample sd, what the
    folds were selected on (``monitor``: its best value per fold), and the pooled out-of-fold AUC."""
    arr = np.asarray(aucs, dtype=np.float64)
    return {
        "metric": "macro_auc",
        "folds": len(arr),
        "per_fold": [float(v) for v in arr],
        "mean": float(arr.mean()) if len(arr) else float("nan"),
        "sd": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
        "monitor": monitor,
        "monitor_per_fold": [float(v) for v in monitored],
        "out_of_fold_macro_auc": oof_auc,
    }


def write_parent(cfg: RunConfig, parent: Path, log: Log, device: str = "auto") -> Path:
    """The parent run from its finished folds: split.csv, config.yaml, model.json and cv.json."""
    data: TrainData = prepare_data(cfg)  # the cache the folds used; the parent's own partition (fold 0)
    write_text(parent / files.CONFIG, absolute_paths(cfg).to_yaml())
    save_split_manifest(parent / files.SPLIT, data.cache.meta, data.partition, data.cache.images)
    members = [fold_name(k) for k in range(1, cfg.partition.folds + 1)]
    runs = [RunModel.load(parent / m, device) for m in members]
    first = runs[0]
    pkg_stub = dataclasses.replace(
        first.package, model_config={**first.package.model_config, "ensemble": members}
    )
    ensemble = RunModel(parent, first.model, pkg_stub, first.device, "torch", runs)
    idx, logits = split_logits(ensemble, data, "val", cfg.train.batch_size * 2)
    pkg = build_package(
        model_name=first.package.model_name,
        model_config=pkg_stub.model_config,
        labels=data.labels,
        task=first.package.task,
        input_spec=first.package.input,
        val_logits=logits,
        val_targets=data.targets[idx],
        target_sensitivity=cfg.triage.target_sensitivity,
        score_method=cfg.triage.score,
        groups=patient_ids(data, idx),
        data=data_summary(data, cfg),
    )
    write_package(parent, pkg)
    oof = summary_metrics(data.targets[idx], logits_to_probs(logits, data.task), 0.5, labels=data.labels)
    summaries = [read_json(parent / m / files.SUMMARY) for m in members]
    aucs = [s["val"].get("macro_auc", float("nan")) for s in summaries]
    monitored = [s["best_value"] if s["best_value"] is not None else float("nan") for s in summaries]
    cv = cv_summary(aucs, monitored, cfg.train.monitor, float(oof["macro_auc"]))
    write_json(parent / CV, cv)
    summary = {  # shaped like a fold's, so experiment tables compare K-fold and single runs
        "monitor": cfg.train.monitor,
        "best_value": cv["mean"],
        "best_epoch": None,
        "epochs_run": sum(s["epochs_run"] for s in summaries),
        "stopped_early": any(s["stopped_early"] for s in summaries),
        "train_seconds": sum(s["train_seconds"] for s in summaries),
        "parameters": sum(s["parameters"] for s in summaries),
        "val": {k: v for k, v in oof.items() if isinstance(v, (int, float))},  # out of fold
        "cv": cv,
    }
    write_json(parent / files.SUMMARY, summary)
    log(
        f"cross-validation: macro AUC {cv['mean']:.4f} ± {cv['sd']:.4f} over {len(members)} folds "
        f"({', '.join(f'{v:.4f}' for v in aucs)}); "
        f"out-of-fold macro AUC {cv['out_of_fold_macro_auc']:.4f}; "
        f"ensemble run {parent}"
    )
    return parent
