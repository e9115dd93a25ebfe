"""``cxr validate``: a run scored on another site's labelled images, at the run's stored decisions.

Local validation is what a hospital does before it relies on a model, and what cross-dataset studies
do to learn whether a model generalises (Cohen et al., MIDL 2020). The site's images go through the
same preparation as the run's (size, resize mode), its labels are aligned by name with the run's
(labels the site lacks are reported and left unknown, never guessed), and the result is the same
report as ``cxr evaluate``: thresholds, calibration and the triage operating point are the ones the
run stores, applied unchanged. Files that cannot be read or assessed are listed, never dropped.
The block "training site vs this site" puts the run's validation figures beside the site's, with
the site's confidence interval and whether the training-site value lies outside it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrkit.config import DataConfig, EvalConfig, RunConfig
from cxrkit.data import build_dataset
from cxrkit.data.assess import MIN_SIDE, assessment_problem
from cxrkit.data.cache import CachedDataset
from cxrkit.data.splits import DIGEST, pixel_digests, read_split_manifest
from cxrkit.evaluate.sample_size import wilson_interval
from cxrkit.evaluate.thresholds import parse_rule
from cxrkit.labels import align_labels
from cxrkit.outputs import read_json
from cxrkit.run import files
from cxrkit.run.data import (
    Log,
    TrainData,
    absolute_paths,
    build_cache,
    load_run_config,
    load_run_data,
    locate_cache,
)
from cxrkit.run.model import RunModel, SplitPredictions, predict_split
from cxrkit.workflows.evaluate import baseline_targets, evaluate_predictions

SITE = "site"  # the name of the evaluated part in evaluation.json and the report


@dataclass
class SiteData:
    """A site's prepared images with the run's labels, and what could not be used."""

    data: TrainData  # partition {"site": the assessable rows}
    source: str
    path: str
    missing_labels: list[str]  # the run's labels the site does not have (unknown there)
    ignored_labels: list[str]  # the site's labels the run does not predict
    not_scored: list[dict] = field(default_factory=list)  # {"image_id", "status", "reason"}


def site_data(run: RunModel, dcfg: DataConfig, cache_dir: str, log: Log, progress: bool = False) -> SiteData:
    """The site's images prepared as the run's were (its cache is reused when unchanged), labels aligned.

    A cached image the assessability rule refuses (blank, no content) is listed as not assessable.
    """
    cfg = load_run_config(run.path)
    prepare = dataclasses.replace(cfg.prepare, size=run.spec.size, mode=run.spec.mode, force=False)
    cfg = absolute_paths(dataclasses.replace(cfg, data=dcfg, prepare=prepare, cache_dir=cache_dir))
    ds = build_dataset(cfg.data)
    path, key = locate_cache(cfg, ds)
    res = build_cache(cfg, ds, path, key, log, progress)
    cache = CachedDataset(path)
    targets, missing, ignored = align_labels(tuple(cache.labels), cache.targets(), run.labels)
    if len(missing) == len(run.labels):
        raise ValueError(
            f"{dcfg.path}: none of the run's labels ({', '.join(run.labels)}) is among the site's "
            f"({', '.join(cache.labels) or 'none'}); expected labelled images of at least one of them"
        )
    not_scored = [{"image_id": Path(f).name, "status": "unreadable", "reason": r} for f, r in res.failures]
    keep = []
    for i in range(len(cache.meta)):
        problem = assessment_problem(np.asarray(cache.images[i]), min(MIN_SIDE, run.spec.size))
        if problem:
            not_scored.append(
                {
                    "image_id": str(cache.meta["image_id"].iat[i]),
                    "status": "not assessable",
                    "reason": problem,
                }
            )
        else:
            keep.append(i)
    data = TrainData(cache, run.labels, targets, {SITE: np.asarray(keep, dtype=np.int64)}, run.task)
    return SiteData(data, dcfg.source, str(cfg.data.path), missing, ignored, not_scored)


GENERIC = {"images", "image", "imgs", "train", "test", "val", "data", "png", "dicom", "files"}


def site_name(path: str | Path | None) -> str:
    """A folder-name-safe name for a site from its data path (``validate-NAME``); a generic folder
    name ("images", "train") is prefixed with its parent's: ``nih14-64px-images``."""
    where = Path(str(path or "site")).resolve()
    name = where.name if where.name.lower() not in GENERIC else f"{where.parent.name}-{where.name}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return name or "site"


def training_overlap(run: RunModel, data: TrainData) -> dict[str, int]:
    """How many of the site's scored images are pixel-identical to the run's train and val images
    (split.csv's CRC-32 of the prepared pixels): figures on them are not another site's."""
    path = run.path / files.SPLIT
    if not path.is_file():
        return {}
    manifest = read_split_manifest(path)
    if DIGEST not in manifest:
        return {}
    digests = pixel_digests(data.cache.images, data.partition[SITE])
    out = {}
    for part in ("train", "val"):
        own = set(manifest.loc[manifest["split"] == part, DIGEST])
        out[part] = int(sum(d in own for d in digests))
    return out


def run_validation(run: RunModel, log: Log) -> tuple[SplitPredictions | None, np.ndarray | None]:
    """The run's own validation predictions and training targets when its data is here, else (None, None)."""
    try:
        own = load_run_data(run.path, log)
    except (FileNotFoundError, ValueError) as err:
        log(
            f"note: the run's own data is not here ({str(err).splitlines()[0]}): using what model.json stores"
        )
        return None, None
    return predict_split(run, own, "val"), baseline_targets(own)


def validate_run(
    run_dir: str | Path,
    dcfg: DataConfig,
    cfg: EvalConfig | None = None,
    cache_dir: str = RunConfig.cache_dir,
    log: Log = print,
) -> Path:
    """Score the run on the site ``dcfg`` and write the evaluation report there; return its folder."""
    cfg = cfg or EvalConfig()
    parse_rule(cfg.threshold)
    run = RunModel.load(run_dir, cfg.device)
    out = Path(cfg.out) if cfg.out else files.validation_dir(run.path, site_name(dcfg.path))
    site = site_data(run, dcfg, cache_dir, log)
    log(
        f"site {site.path}: {len(site.data.partition[SITE]):,} images scored, {len(site.not_scored):,} not"
        + (
            f"; labels the site lacks (left unknown): {', '.join(site.missing_labels)}"
            if site.missing_labels
            else ""
        )
    )
    overlap = training_overlap(run, site.data)
    if sum(overlap.values()):
        log(
            f"warning: {overlap.get('train', 0):,} of the site's images are the run's training images and "
            f"{overlap.get('val', 0):,} its validation images (identical pixels): these figures are not "
            "another site's"
        )
    val, train_t = run_validation(run, log)
    ev = predict_split(run, site.data, SITE)
    if train_t is None:  # the baselines draw from the site's own prevalence: said in the report
        train_t = ev.targets
    own = val is not None

    def site_block(m: dict, worklist) -> dict:
        block = {**_site_block(site, own), "training_overlap": overlap}
        return {"site": {**block, **site_figures(run, m, worklist)}}

    out = evaluate_predictions(run, ev, val, train_t, cfg, out, log, site_block)
    for row in read_json(files.evaluation_file(out))["site"]["comparison"]:
        ci = f" [{row['low']:.3f}, {row['high']:.3f}]" if row["outside_ci"] is not None else ""
        log(
            f"{row['metric']}: training site {row['training_site']:.3f}, this site {row['this_site']:.3f}"
            + ci
            + ("  OUTSIDE the site's CI" if row["outside_ci"] else "")
        )
    return out


def _site_block(site: SiteData, own_data: bool) -> dict:
    return {
        "source": site.source,
        "path": site.path,
        "images_scored": len(site.data.partition[SITE]),
        "missing_labels": site.missing_labels,
        "ignored_labels": site.ignored_labels,
        "not_scored": site.not_scored,
        "validation_from": "the run's validation split"
        if own_data
        else "model.json (the run's data is not here)",
    }


def site_comparison(run: RunModel, m: dict) -> list[dict]:
    """Training-site (validation) figures beside this site's, with the site's 95% CI."""
    val = run.package.validation
    point = run.package.operating_point
    tri = m["triage"]
    rows = []
    pairs = [
        ("macro ROC-AUC", val.get("macro_auc"), m["macro_auc"]),
        ("No Finding ROC-AUC", val.get("no_finding_auc"), m.get("no_finding_auc")),
        (
            "triage sensitivity",
            point.val_sensitivity,
            {"value": tri[SITE]["sensitivity"], **tri["ci"]["sensitivity"]},
        ),
        (
            "triage specificity",
            point.val_specificity,
            {"value": tri[SITE]["specificity"], **tri["ci"]["specificity"]},
        ),
    ]
    for metric, train, here in pairs:
        if train is None or here is None or not np.isfinite(train) or not np.isfinite(here["value"]):
            continue
        low, high = here["low"], here["high"]
        # --bootstrap 0, or one patient (every replicate the same): no interval, nothing to be outside
        known = bool(np.isfinite(low) and np.isfinite(high) and m.get("patients", 2) >= 2)
        rows.append(
            {
                "metric": metric,
                "training_site": float(train),
                "this_site": float(here["value"]),
                "difference": float(here["value"] - train),
                "low": float(low),
                "high": float(high),
                "outside_ci": bool(not low <= train <= high) if known else None,
            }
        )
    return rows


def site_figures(run: RunModel, m: dict, worklist) -> dict:
    """The comparison with the training site; PPV and NPV at the site's prevalence; the Wilson CI
    widths its counts allow; the abnormal studies the operating point missed."""
    t = m["triage"][SITE]
    tp = t["abnormal"] - t["missed"]
    fp, tn, fn = t["flagged"] - tp, t["reads_saved"], t["missed"]
    sens_ci, spec_ci = wilson_interval(tp, tp + fn), wilson_interval(tn, tn + fp)
    missed = (
        worklist[(worklist["truth"] == "abnormal") & (worklist["flag"] == "normal")]
        if "truth" in worklist
        else []
    )
    return {
        "comparison": site_comparison(run, m),
        "prevalence": t["abnormal"] / t["images"] if t["images"] else float("nan"),
        "ppv": tp / (tp + fp) if tp + fp else float("nan"),
        "npv": tn / (tn + fn) if tn + fn else float("nan"),
        "positives": int(tp + fn),
        "negatives": int(tn + fp),
        "sensitivity_ci_width": sens_ci[1] - sens_ci[0],
        "specificity_ci_width": spec_ci[1] - spec_ci[0],
        "missed": [str(i) for i in missed["image_id"]] if len(missed) else [],
    }
