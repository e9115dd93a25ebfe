"""``cxr validate RUN DATA --recalibrate``: a site-calibrated run without retraining.

A model moved to another hospital keeps its ranking far better than its calibration and operating
point (the stored threshold gives a different sensitivity and specificity there). The site's
labelled images are split by patient into a calibration part and an evaluation part; temperatures,
per-label thresholds and the triage operating point are refitted on the calibration part exactly as
training fits them on its validation split (same function, same target sensitivity and score), and
a new run folder is written: the parent's weights (copied), a model.json whose ``validation.site``
records the site, the counts and the parent, a config that names the site's data, and a split.csv
with ``val`` = calibration and ``test`` = evaluation. The parent and the new run are then both
scored on the evaluation part, so the report shows before and after on images neither was fitted on.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from cxrkit.config import DataConfig, EvalConfig, PartitionConfig, RunConfig
from cxrkit.data.splits import patient_split, save_split_manifest
from cxrkit.evaluate.sample_size import wilson_width
from cxrkit.evaluate.triage import abnormal_truth
from cxrkit.outputs import read_json, write_json, write_text
from cxrkit.report.html import value_ci
from cxrkit.report.site import recalibration_page
from cxrkit.run import files
from cxrkit.run.data import Log, absolute_paths, load_run_config
from cxrkit.run.model import RunModel, predict_split, split_logits
from cxrkit.run.onnx import weights_digest
from cxrkit.run.ood import refit_monitor_reference
from cxrkit.run.package import build_package, write_package
from cxrkit.training.record import patient_ids
from cxrkit.workflows.evaluate import evaluate_predictions, evaluate_run
from cxrkit.workflows.validate import SiteData, site_data, site_name

RECALIBRATION, RECALIBRATION_PAGE = "recalibration.json", "recalibration.html"
PARENT_EVAL = "eval-test-parent"  # the parent's stored decisions on the same evaluation part
WIDE = 0.1  # a calibration part whose sensitivity interval is wider than this gets a warning


def site_partition(site: SiteData, share: float, seed: int) -> dict[str, np.ndarray]:
    """The site's assessable rows split by patient: ``val`` (calibration, ``share``) and ``test``."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"--calibration-share {share}: expected a share in (0, 1)")
    rows = site.data.partition["site"]
    pids = site.data.cache.meta["patient_id"].astype(str).to_numpy()[rows]
    parts = patient_split(pids, site.data.targets[rows], {"val": share, "test": 1.0 - share}, seed)
    partition = {k: rows[v] for k, v in parts.items()}
    abnormal = abnormal_truth(site.data.targets, site.data.labels)
    for part, what in (("val", "calibration"), ("test", "evaluation")):
        a = abnormal[partition[part]]
        if len(partition[part]) == 0 or not (a == 1).any() or not (a == 0).any():
            raise ValueError(
                f"{site.path}: the {what} part ({len(partition[part])} images of {len(np.unique(pids))} "
                "patients) lacks abnormal or normal studies; recalibration needs both in both parts: more "
                "labelled images or another --calibration-share"
            )
    return partition


def site_config(run: RunModel, dcfg: DataConfig, cache_dir: str, share: float, seed: int) -> RunConfig:
    """The parent's config with the site's data, the run's labels and input, and the site partition."""
    cfg = load_run_config(run.path)
    return absolute_paths(
        dataclasses.replace(
            cfg,
            data=dcfg,
            cache_dir=cache_dir,
            prepare=dataclasses.replace(cfg.prepare, size=run.spec.size, mode=run.spec.mode, force=False),
            train=dataclasses.replace(cfg.train, labels=tuple(run.labels)),
            partition=PartitionConfig(method="patient", train=0.0, val=share, test=1.0 - share, seed=seed),
        )
    )


def _check_parent(run: RunModel, out: Path, site: SiteData | None = None) -> None:
    if run.members:
        raise ValueError(
            f"{run.path} is a K-fold ensemble: recalibrate one of its fold runs (each is a whole run)"
        )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: a site run is written to a new folder")
    if site is not None and site.missing_labels:
        raise ValueError(
            f"{site.path}: the site has no labels for {', '.join(site.missing_labels)}; recalibration "
            "refits every label's temperature and threshold, so the site needs all of the run's labels "
            f"({', '.join(run.labels)}). `cxr validate` without --recalibrate scores the shared ones"
        )


def recalibrate_site(
    run_dir: str | Path,
    dcfg: DataConfig,
    out_dir: str | Path | None = None,
    share: float = 0.3,
    cfg: EvalConfig | None = None,
    cache_dir: str = RunConfig.cache_dir,
    log: Log = print,
) -> Path:
    """Write a site-calibrated run folder from ``run_dir`` and the site ``dcfg``; return the folder."""
    cfg = cfg or EvalConfig()
    run = RunModel.load(run_dir, cfg.device)
    name = site_name(dcfg.path)
    out = Path(out_dir) if out_dir else run.path.parent / f"{run.path.name}-{name}"
    _check_parent(run, out)
    site = site_data(run, dcfg, cache_dir, log)
    _check_parent(run, out, site)
    seed = dcfg.seed  # --seed: the calibration/evaluation partition (and phantoms)
    partition = site_partition(site, share, seed)
    data = dataclasses.replace(site.data, partition=partition)
    idx, logits = split_logits(run, data, "val")
    parent = run.package
    fitted = build_package(
        model_name=parent.model_name,
        model_config=parent.model_config,
        labels=parent.labels,
        task=parent.task,
        input_spec=parent.input,
        val_logits=logits,
        val_targets=data.targets[idx],
        target_sensitivity=parent.operating_point.target_sensitivity,
        score_method=parent.operating_point.score,
        rules=tuple(parent.thresholds),
        groups=patient_ids(data, idx),
        data=parent.data,  # the weights' training data: a site calibration trains nothing
    )
    meta = data.cache.meta
    abnormal = abnormal_truth(data.targets[idx], parent.labels)
    n_abn, n_norm = int((abnormal == 1).sum()), int((abnormal == 0).sum())
    provenance = {
        "name": name,
        "source": site.source,
        "path": site.path,
        "parent_run": str(run.path),
        "parent_weights_sha256": weights_digest(run.path),
        "parent_validation": {k: parent.validation.get(k) for k in ("images", "macro_auc", "no_finding_auc")},
        "parent_operating_point": parent.operating_point.as_dict(),
        "parent_temperatures": list(parent.temperatures),
        "calibration_share": share,
        "seed": seed,
        "calibration_images": len(partition["val"]),
        "calibration_patients": int(meta["patient_id"].iloc[partition["val"]].nunique()),
        "evaluation_images": len(partition["test"]),
        "evaluation_patients": int(meta["patient_id"].iloc[partition["test"]].nunique()),
        "calibration_abnormal": n_abn,
        "calibration_normal": n_norm,
        # how precisely the calibration part pins the operating point (Wilson 95%): small parts, wide
        "sensitivity_ci_width": wilson_width(fitted.operating_point.val_sensitivity, n_abn),
        "specificity_ci_width": wilson_width(fitted.operating_point.val_specificity, n_norm),
        "not_scored": len(site.not_scored),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    # the OOD reference stays the parent's: "out of distribution" means unlike the training images
    pkg = dataclasses.replace(fitted, validation={**fitted.validation, "site": provenance}, ood=parent.ood)
    config = site_config(run, dcfg, cache_dir, share, seed)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(run.path / files.BEST, tmp / files.BEST)
    if parent.ood:
        shutil.copy2(run.path / parent.ood["file"], tmp / parent.ood["file"])
    write_text(tmp / files.CONFIG, config.to_yaml())
    save_split_manifest(tmp / files.SPLIT, meta, partition, data.cache.images)
    write_package(tmp, pkg)
    if parent.ood:  # drift is watched against the site's calibration images, at the site's decisions
        site_run = RunModel.load(tmp, cfg.device)
        pkg = dataclasses.replace(pkg, ood=refit_monitor_reference(site_run, data, "val"))
        write_package(tmp, pkg)
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.rename(out)  # the folder appears whole or not at all
    _log_fit(parent, pkg, provenance, log)
    return compare_on_evaluation(run, out, data, cfg, log)


def _log_fit(parent, pkg, prov: dict, log: Log) -> None:
    old, new = parent.operating_point, pkg.operating_point
    log(
        f"site calibration on {prov['calibration_images']:,} images ({prov['calibration_patients']:,} "
        f"patients): triage threshold {old.threshold:.4g} -> {new.threshold:.4g} for sensitivity "
        f"{new.target_sensitivity:g} ({'reached' if new.reached else 'NOT reached'} on the calibration "
        "part); "
        f"ECE {pkg.validation['ece_before']:.3f} -> {pkg.validation['ece_after']:.3f}"
    )
    width = prov["sensitivity_ci_width"]
    if not width <= WIDE:
        log(
            f"warning: the operating point rests on {prov['calibration_abnormal']:,} abnormal studies: its "
            f"sensitivity is known to a 95% interval {width:.2f} wide; `cxr validate --plan` says how "
            "many a site needs"
        )


def compare_on_evaluation(parent: RunModel, site_run: Path, data, cfg: EvalConfig, log: Log) -> Path:
    """Score the parent (its stored decisions) and the site run on the evaluation part; recalibration.json."""
    calib_targets = data.targets[data.partition["val"]]
    before = evaluate_predictions(
        parent,
        predict_split(parent, data, "test"),
        None,
        calib_targets,
        dataclasses.replace(cfg, split="test", out=None),
        site_run / PARENT_EVAL,
        log,
    )
    after = evaluate_run(site_run, dataclasses.replace(cfg, split="test", out=None), log)
    rows = before_after(read_json(files.evaluation_file(before)), read_json(files.evaluation_file(after)))
    write_json(site_run / RECALIBRATION, {"evaluation_part": "test", "rows": rows})
    site = read_json(site_run / files.PACKAGE)["validation"]["site"]
    write_text(site_run / RECALIBRATION_PAGE, recalibration_page(rows, site))
    log(f"on the evaluation part ({rows[0]['images']:,} images): parent's decisions -> site-calibrated")
    for r in rows:
        log(f"  {r['metric']}: {with_ci(r, 'before')} -> {with_ci(r, 'after')}")
    log(
        f"wrote {site_run}: a run folder (cxr predict/evaluate/export/serve take it); "
        f"{RECALIBRATION}, {RECALIBRATION_PAGE}"
    )
    return site_run


def with_ci(row: dict, side: str) -> str:
    """``row[side]`` with its ``[low, high]`` when the row has a finite interval for that side."""
    return value_ci(row[side], row[f"{side}_low"], row[f"{side}_high"], "not estimable")


def before_after(before: dict, after: dict) -> list[dict]:
    """Triage sensitivity/specificity/reads saved, macro ROC-AUC and pooled ECE, before and after."""
    nan = float("nan")
    rows = []
    for metric, key in (
        ("triage sensitivity", "sensitivity"),
        ("triage specificity", "specificity"),
        ("reads saved share", "reads_saved_share"),
    ):
        b, a = before["triage"], after["triage"]
        rows.append(
            {
                "metric": metric,
                "before": b["test"][key],
                "before_low": b["ci"].get(key, {}).get("low", nan),
                "before_high": b["ci"].get(key, {}).get("high", nan),
                "after": a["test"][key],
                "after_low": a["ci"].get(key, {}).get("low", nan),
                "after_high": a["ci"].get(key, {}).get("high", nan),
            }
        )
    rows.append(
        {
            "metric": "macro ROC-AUC",
            "before": before["macro_auc"]["value"],
            "before_low": before["macro_auc"]["low"],
            "before_high": before["macro_auc"]["high"],
            "after": after["macro_auc"]["value"],
            "after_low": after["macro_auc"]["low"],
            "after_high": after["macro_auc"]["high"],
        }
    )
    rows.append(
        {
            "metric": "pooled ECE",
            "before": before["calibration"]["ece_pooled"],
            "before_low": nan,
            "before_high": nan,
            "after": after["calibration"]["ece_pooled"],
            "after_low": nan,
            "after_high": nan,
        }
    )
    for r in rows:
        r["images"] = after["images"]
    return rows
