"""What training leaves in the run folder: history.csv, curves.png, summary.json and model.json."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrkit.config import RunConfig, TrainConfig
from cxrkit.data.transforms import InputSpec
from cxrkit.models.net import CXRNet
from cxrkit.outputs import write_csv
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData
from cxrkit.run.model import network_spec
from cxrkit.run.package import ModelPackage, build_package, write_package
from cxrkit.training.scoring import predict_logits
from cxrkit.training.stopping import EarlyStopping


def input_spec(cfg: RunConfig) -> InputSpec:
    """The input spec a run stores: the cache's size and resize mode, and the intensity standardization."""
    return InputSpec(cfg.prepare.size, cfg.prepare.mode, intensity=cfg.prepare.intensity)  # type: ignore[arg-type]


def write_model_package(
    run_dir: Path,
    model: CXRNet,
    data: TrainData,
    cfg: RunConfig,
    device: torch.device,
    log: Log,
    keep_ood: dict | None = None,
) -> ModelPackage:
    """Fit calibration, thresholds and the operating point on validation logits; write model.json; log."""
    idx = data.partition["val"]
    logits, _ = predict_logits(model, data, idx, cfg.train.batch_size * 2, device, tta=cfg.model.tta)
    pkg = build_package(
        model_name=cfg.model.name,
        model_config=network_spec(dataclasses.asdict(cfg.model), model),
        labels=data.labels,
        task=data.task,
        input_spec=input_spec(cfg),  # type: ignore[arg-type]
        val_logits=logits,
        val_targets=data.targets[idx],
        target_sensitivity=cfg.triage.target_sensitivity,
        score_method=cfg.triage.score,
        groups=patient_ids(data, idx),
        data=data_summary(data, cfg),
    )
    write_package(run_dir, pkg)
    pkg = write_ood_reference(run_dir, pkg, data, device, log, keep_ood)
    for warning in pkg.validation["warnings"]:
        log(f"warning: {warning}")
    op = pkg.operating_point
    log(
        f"wrote {run_dir / files.PACKAGE}: temperatures fitted on {len(idx):,} validation images "
        f"(ECE {pkg.validation['ece_before']:.3f} -> {pkg.validation['ece_after']:.3f}); triage threshold "
        f"{op.threshold:.6g} for sensitivity {op.target_sensitivity:g} "
        f"({'reached' if op.reached else 'NOT reached'}: validation {op.val_sensitivity:.3f})"
    )
    return pkg


def patient_ids(data: TrainData, idx: np.ndarray) -> np.ndarray | None:
    """The patient IDs of rows ``idx`` (bootstrap units), or None when the cache has none."""
    meta = data.cache.meta
    return meta["patient_id"].astype(str).to_numpy()[idx] if "patient_id" in meta.columns else None


def data_summary(data: TrainData, cfg: RunConfig) -> dict:
    """model.json's ``data``: where the training images came from, how many, from how many patients,
    each label's prevalence in training, and whether they were synthetic (a model card warns then)."""
    meta, out = data.cache.meta, {"source": cfg.data.source, "synthetic": cfg.data.source == "phantom"}
    for split in ("train", "val", "test"):
        rows = np.asarray(data.partition.get(split, []), dtype=np.int64)
        part: dict = {"images": len(rows)}
        if "patient_id" in meta.columns and len(rows):
            part["patients"] = int(meta["patient_id"].iloc[rows].nunique())
        out[split] = part
    train = np.asarray(data.partition.get("train", []), dtype=np.int64)
    if len(train):
        with warnings.catch_warnings():  # a label without any known target (fine-tuning data): None
            warnings.simplefilter("ignore", RuntimeWarning)
            prevalence = np.nanmean(data.targets[train], axis=0)
        out["prevalence"] = {
            lab: (float(v) if np.isfinite(v) else None)
            for lab, v in zip(data.labels, prevalence, strict=True)
        }
    return out


def write_ood_reference(
    run_dir: Path,
    pkg: ModelPackage,
    data: TrainData,
    device: torch.device,
    log: Log,
    keep: dict | None = None,
) -> ModelPackage:
    """Fit the OOD reference through the saved run (the path predictions take); add it to model.json.

    A run without training images (a site-calibrated run) keeps ``keep``, the section it had: its
    reference is its parent's training distribution, which is what "out of distribution" means.
    """
    from cxrkit.run.model import RunModel
    from cxrkit.run.ood import fit_run_reference

    if len(data.partition.get("train", [])) == 0:
        if keep:
            pkg = dataclasses.replace(pkg, ood=keep)
            write_package(run_dir, pkg)
        log(
            "OOD reference "
            + ("kept (the run has no training images)" if keep else "not fitted: no training images")
        )
        return pkg
    section = fit_run_reference(RunModel.load(run_dir, str(device)), data)
    pkg = dataclasses.replace(pkg, ood=section)
    write_package(run_dir, pkg)
    log(
        f"OOD reference ({section['method']}, {section['features']} features): threshold "
        f"{section['threshold']:.4g} flags {section['val_flag_rate']:.1%} of validation images"
    )
    return pkg


def write_history(run_dir: Path, history: list[dict], curves: bool = True) -> None:
    """history.csv (every epoch) and, when ``curves``, curves.png from the per-epoch rows."""
    frame = pd.DataFrame(history)
    write_csv(run_dir / files.HISTORY, frame, index=False)
    if not curves:
        return
    from cxrkit.report.curves import plot_training_curves

    plot_training_curves(frame, run_dir / files.CURVES)


def write_summary(
    run_dir: Path,
    history: list[dict],
    stop: EarlyStopping,
    t: TrainConfig,
    model: nn.Module,
    diverged: bool = False,
) -> None:
    """summary.json (strict JSON): the best epoch's validation metrics, training time and model size."""
    from cxrkit.outputs import write_json

    rows = [r for r in history if r.get("stage") == "train"]
    best = next((r for r in rows if r["epoch"] == stop.best_epoch), rows[-1] if rows else {})
    summary = {
        "monitor": t.monitor,
        "best_value": stop.best,
        "best_epoch": stop.best_epoch,
        "epochs_run": len(rows),
        "stopped_early": stop.stopped,
        "train_seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "val": {k: v for k, v in best.items() if k not in ("epoch", "stage", "lr", "seconds", "img_per_s")},
    }
    if diverged:
        summary["diverged"] = "no epoch gave a finite validation metric; no model.json was written"
    write_json(run_dir / files.SUMMARY, summary)
