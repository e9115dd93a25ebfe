"""``evaluate_run``: a run folder in, ``eval-<split>/`` out (evaluation.json, CSVs, report.html).

Thresholds, the triage operating point and the calibration were chosen on the run's *validation*
split at the end of training and stored in ``model.json``; they are applied unchanged to the
evaluated split. A rule or target that is not stored is chosen on validation now, and the log and
the report say so. Macro and micro averages cover the findings ("No Finding" excluded, as in the
ChestX-ray14 literature); "No Finding" is reported on its own line as the normal-vs-abnormal score.
Evaluating ``val`` itself is allowed and the report says its thresholds were tuned on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cxrkit.config import EvalConfig
from cxrkit.evaluate.baselines import BASELINES, baseline_scores
from cxrkit.evaluate.bootstrap import ranking_cis, rate_cis
from cxrkit.evaluate.calibration import (
    expected_calibration_error,
    per_label_ece,
    reliability_curve,
    reliability_table,
)
from cxrkit.evaluate.fairness import subgroup_label_auc, subgroup_table
from cxrkit.evaluate.metrics import THRESHOLD_METRICS, confusion_counts, summary_metrics, threshold_metrics
from cxrkit.evaluate.thresholds import parse_rule
from cxrkit.evaluate.triage import (
    abnormal_truth,
    abnormality_score,
    build_worklist,
    is_flagged,
    triage_counts,
    triage_sweep,
)
from cxrkit.labels import NO_FINDING, finding_columns
from cxrkit.outputs import make_out_dir, read_csv, read_json, write_csv, write_json
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData, load_run_data
from cxrkit.run.model import RunModel, SplitPredictions, predict_split
from cxrkit.run.onnx import weights_digest
from cxrkit.run.package import (
    NeedsValidation,
    degenerate_point_warnings,
    resolve_operating_point,
    resolve_thresholds,
)

if TYPE_CHECKING:
    from cxrkit.report.evaluation import EvalFigures

FIXED_RULES = ("0.5", "0.2", "max_f1", "youden")
RULE_COLUMNS = (*THRESHOLD_METRICS, "subset_accuracy")

__all__ = ["EvalConfig", "evaluate_run"]


def per_label_table(
    labels: tuple[str, ...], y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, cis, beta: float
) -> pd.DataFrame:
    """One row per label: support, AUC and AP with CIs, threshold, P/R/specificity/F1/F-beta, ECE."""
    t = threshold_metrics(y, p, thresholds, beta)
    return pd.DataFrame(
        {
            "label": labels,
            "positives": t["support"].astype(int),
            "known": (~np.isnan(y)).sum(0),
            "auc": [c.value for c in cis.auc],
            "auc_low": [c.low for c in cis.auc],
            "auc_high": [c.high for c in cis.auc],
            "ap": [c.value for c in cis.ap],
            "ap_low": [c.low for c in cis.ap],
            "ap_high": [c.high for c in cis.ap],
            "threshold": thresholds,
            "precision": t["precision"],
            "recall": t["recall"],
            "specificity": t["specificity"],
            "f1": t["f1"],
            "fbeta": t["fbeta"],
            "ece": per_label_ece(y, p),
        }
    )


def _rule_table(
    run: RunModel, val: SplitPredictions | None, ev: SplitPredictions, cfg: EvalConfig, target: float
) -> pd.DataFrame:
    rows = []
    rules = dict.fromkeys([*FIXED_RULES, f"max_f{cfg.beta:g}", f"sensitivity:{target:g}", cfg.threshold])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for rule in rules:
            try:
                th, source = resolve_thresholds(run.package, rule, val.truth_and_probs if val else None)
            except NeedsValidation:  # not stored, and no validation data to choose it on: left out
                continue
            m = summary_metrics(ev.targets, ev.probs, th, cfg.beta, labels=run.labels)
            rows.append({"rule": rule, "thresholds": source, **{k: m[k] for k in RULE_COLUMNS}})
    return pd.DataFrame(rows)


def _baselines(
    train_t: np.ndarray, ev: SplitPredictions, labels, abnormal, score_method: str, cfg: EvalConfig
) -> pd.DataFrame:
    rows = []
    for kind in BASELINES:
        s = baseline_scores(kind, train_t, len(ev.probs), labels, cfg.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = summary_metrics(ev.targets, s, 0.5, cfg.beta, labels=labels)
        score, _ = abnormality_score(s, labels, score_method)
        tri = triage_counts(abnormal, score, 0.5)
        rows.append(
            {
                "model": kind,
                **m,
                "triage_sensitivity": tri["sensitivity"],
                "triage_specificity": tri["specificity"],
                "reads_saved_share": tri["reads_saved_share"],
            }
        )
    return pd.DataFrame(rows)


def evaluate_run(run_dir: str | Path, cfg: EvalConfig | None = None, log: Log = print) -> Path:
    """Evaluate a run on ``cfg.split``: evaluation.json, CSVs and report.html; return the output folder."""
    cfg = cfg or EvalConfig()
    parse_rule(cfg.threshold)  # a bad rule fails before anything is loaded
    run = RunModel.load(run_dir, cfg.device)
    out = Path(cfg.out) if cfg.out else files.eval_dir(run.path, cfg.split)
    data = load_run_data(run.path, log)
    val = predict_split(run, data, "val")
    ev = val if cfg.split == "val" else predict_split(run, data, cfg.split)
    return evaluate_predictions(run, ev, val, baseline_targets(data), cfg, out, log)


def baseline_targets(data: TrainData) -> np.ndarray:
    """The training targets the naive baselines draw from (a K-fold parent: its out-of-fold images)."""
    return data.targets[data.partition["train"] if "train" in data.partition else data.partition["val"]]


def evaluate_predictions(
    run: RunModel,
    ev: SplitPredictions,
    val: SplitPredictions | None,
    train_targets: np.ndarray,
    cfg: EvalConfig,
    out: Path,
    log: Log = print,
    extra: Callable[[dict, pd.DataFrame], dict] | None = None,
) -> Path:
    """Score ``ev`` (predictions on split ``ev.part``) and write ``out``; ``val`` (None: only what the
    run stores is used) picks rules the run does not store; ``extra(evaluation, worklist)`` returns
    keys added to evaluation.json before anything is written."""
    labels = run.labels
    val_pair = val.truth_and_probs if val is not None else None
    out = make_out_dir(out)
    log(f"evaluating {run.path.name} on {ev.part}: {len(ev.probs):,} images, {len(labels)} labels")
    cols = finding_columns(labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        thresholds, th_source = resolve_thresholds(run.package, cfg.threshold, val_pair)
        point, point_source = resolve_operating_point(
            run.package, cfg.target_sensitivity, cfg.score_method, val_pair
        )
        groups = ev.meta["patient_id"].astype(str).to_numpy()
        cis = ranking_cis(ev.targets, ev.probs, groups, cfg.n_boot, cfg.seed, average=cols)
        table = per_label_table(labels, ev.targets, ev.probs, thresholds, cis, cfg.beta)
        summary = summary_metrics(ev.targets, ev.probs, thresholds, cfg.beta, labels=labels)
        score, _ = abnormality_score(ev.probs, labels, point.score)
        abn = abnormal_truth(ev.targets, labels)
        triage = _triage_block(point, point_source, val, ev, score, abn, groups, cfg)
        subgroups = subgroup_table(
            ev.meta, ev.targets[:, cols], ev.probs[:, cols], thresholds[cols], abn, score, point.threshold
        )
        sub_auc = subgroup_label_auc(ev.meta, ev.targets, ev.probs, labels)
        rules = _rule_table(run, val, ev, cfg, point.target_sensitivity)
        baselines = _baselines(train_targets, ev, labels, abn, point.score, cfg)
        calibration = _calibration(run, ev, cols)
    notes = sorted(
        {str(w.message) for w in caught}
        | set(run.package.validation.get("warnings", []))
        | set(degenerate_point_warnings(point))
    )
    for what, source in (("thresholds", th_source), ("triage operating point", point_source)):
        if source != "stored in the run":
            log(f"note: {what} {source} (not stored in the run)")
    conf = confusion_counts(ev.targets, ev.probs, thresholds)
    metrics = {
        **_identity(run, ev, cfg, cols),
        "thresholds_source": th_source,
        "summary": summary,
        "macro_auc": cis.macro_auc.as_dict(),
        "micro_auc": cis.micro_auc.as_dict(),
        "macro_ap": cis.macro_ap.as_dict(),
        "micro_ap": cis.micro_ap.as_dict(),
        "no_finding_auc": _no_finding(cis, labels),
        "calibration": calibration,
        "per_label": table.to_dict(orient="records"),
        "confusion": {lab: {k: int(conf[k][j]) for k in conf} for j, lab in enumerate(labels)},
        "threshold_rules": rules.to_dict(orient="records"),
        "baselines": baselines.to_dict(orient="records"),
        "triage": triage,
        "subgroups": subgroups.to_dict(orient="records"),
        "subgroup_label_auc": sub_auc.to_dict(orient="records"),
        "warnings": notes,
    }
    outside = ~ev.ood.in_distribution if ev.ood is not None else None
    metrics["ood"] = _ood_block(run, ev)
    worklist = build_worklist(
        ev.meta, ev.probs, labels, score, point.threshold, abn, out_of_distribution=outside
    )
    metrics.update(extra(metrics, worklist) if extra else {})
    _write_outputs(out, metrics, table, triage_sweep(abn, score, point.threshold), worklist, ev, labels)
    write_evaluation_report(run.path, out, ev.data, cfg.samples)
    _log_results(metrics, cfg, point, log)
    log(f"wrote {out}: report.html, evaluation.json, per_label/worklist/triage_sweep/predictions.csv")
    return out


def _ood_block(run: RunModel, ev: SplitPredictions) -> dict | None:
    """The split's OOD flags at the run's stored threshold (listed in the worklist, not in the metrics:
    those are the operating point's), or None without a reference."""
    if ev.ood is None or run.ood is None:
        return None
    flagged = ~ev.ood.in_distribution
    return {
        "method": run.ood.method,
        "threshold": 1.0,  # scores are relative: 1 at the stored threshold (run.ood.threshold raw)
        "raw_threshold": run.ood.threshold,
        "images": len(flagged),
        "flagged": int(flagged.sum()),
        "share": float(flagged.mean()) if len(flagged) else float("nan"),
        "val_share": float((run.ood.val_scores > run.ood.threshold).mean())
        if len(run.ood.val_scores)
        else None,
        "median_score": float(np.median(ev.ood.scores)) if len(flagged) else float("nan"),
    }


def _identity(run: RunModel, ev: SplitPredictions, cfg: EvalConfig, cols: list[int]) -> dict:
    """What was evaluated: the run (and its weights' digest, so `cxr compare` tells a stale evaluation),
    the split, its size, the labels and the settings."""
    return {
        "run": str(run.path),
        "model": run.package.model_name,
        "weights_sha256": weights_digest(run.path),
        "split": ev.part,
        "images": len(ev.probs),
        "patients": int(ev.meta["patient_id"].nunique()),
        "labels": list(run.labels),
        "averaged_labels": [run.labels[j] for j in cols],
        "config": asdict(cfg),
        "thresholds_tuned_on": "val",
    }


def _triage_block(point, source: str, val, ev, score, abn, groups, cfg: EvalConfig) -> dict:
    """evaluation.json's triage section: the operating point, its counts on val and the split, with CIs."""
    ci = rate_cis(abn, is_flagged(score, point.threshold), groups, cfg.n_boot, cfg.seed)
    if val is not None:
        val_counts = triage_counts(
            abnormal_truth(val.targets, val.data.labels),
            abnormality_score(val.probs, val.data.labels, point.score)[0],
            point.threshold,
        )
    else:  # only the run folder: what model.json stores about validation
        val_counts = {
            "images": point.val_images,
            "sensitivity": point.val_sensitivity,
            "specificity": point.val_specificity,
        }
    return {
        "score": point.score,
        "target_sensitivity": point.target_sensitivity,
        "threshold": point.threshold,
        "source": source,
        "reached_on_val": point.reached,
        "val": val_counts,
        ev.part: triage_counts(abn, score, point.threshold),
        "ci": {k: v.as_dict() for k, v in ci.items()},
    }


def _calibration(run: RunModel, ev: SplitPredictions, cols: list[int]) -> dict:
    """Pooled ECE before and after temperature scaling, reliability curves and table, per-label ECE."""
    y, p, raw = ev.targets[:, cols], ev.probs[:, cols], ev.raw[:, cols]
    return {
        "ece_pooled": expected_calibration_error(y, p),
        "ece_pooled_before": expected_calibration_error(y, raw),
        "curve": reliability_curve(y, p).to_dict(orient="list"),
        "curve_before": reliability_curve(y, raw).to_dict(orient="list"),
        "table": reliability_table(y, p).to_dict(orient="records"),
        "per_label_ece_before": list(per_label_ece(ev.targets, ev.raw)),
        "temperatures": list(run.package.temperatures),
        "covers": [run.labels[j] for j in cols],
    }


def _write_outputs(out: Path, metrics: dict, table, sweep, worklist, ev: SplitPredictions, labels) -> None:
    """evaluation.json, per_label.csv, triage_sweep.csv, worklist.csv and predictions.csv."""
    write_json(out / files.EVALUATION, metrics)
    (out / files.OLD_EVALUATION).unlink(missing_ok=True)  # an older run's: one file, not two
    write_csv(out / files.PER_LABEL, table, index=False)
    write_csv(out / files.SWEEP, sweep, index=False)
    write_csv(out / files.WORKLIST, worklist, index=False)
    pred = ev.meta[["image_id", "patient_id"]].copy()
    for j, lab in enumerate(labels):
        pred[f"true:{lab}"] = ev.targets[:, j]
        pred[f"prob:{lab}"] = np.round(ev.probs[:, j], 6)
    write_csv(out / files.PREDICTIONS, pred, index=False)


def _log_results(metrics: dict, cfg: EvalConfig, point, log: Log) -> None:
    """The evaluation's three summary lines: ranking, calibration, triage."""
    m, nf, cal = metrics["macro_auc"], metrics["no_finding_auc"], metrics["calibration"]
    n = len(metrics["averaged_labels"])
    log(
        f"macro ROC-AUC over {n} finding{'s' if n != 1 else ''} {m['value']:.3f} "
        f"[{m['low']:.3f}, {m['high']:.3f}]  micro {metrics['micro_auc']['value']:.3f}  "
        f"macro AP {metrics['macro_ap']['value']:.3f}  macro F1 {metrics['summary']['macro_f1']:.3f} "
        f"({cfg.threshold} on val)"
        + (f"  |  No Finding (normal vs abnormal) ROC-AUC {nf['value']:.3f}" if nf else "")
    )
    log(
        f"calibration: ECE {cal['ece_pooled_before']:.3f} before, {cal['ece_pooled']:.3f} after "
        "temperature scaling"
    )
    tri = metrics["triage"][metrics["split"]]
    log(
        f"triage ({point.score}): threshold {point.threshold:.6g} for val sensitivity >= "
        f"{point.target_sensitivity:g} (val {point.val_sensitivity:.3f}"
        + ("" if point.reached else ", target NOT reached on validation")
        + f") -> {metrics['split']} sensitivity {tri['sensitivity']:.3f}, "
        f"specificity {tri['specificity']:.3f}, reads saved {tri['reads_saved_share']:.1%}, "
        f"missed {tri['missed']} of {tri['abnormal']} abnormal"
    )


def _no_finding(cis, labels) -> dict | None:
    if NO_FINDING not in labels or len(finding_columns(labels)) == len(labels):
        return None
    return cis.auc[list(labels).index(NO_FINDING)].as_dict()


def write_evaluation_report(run_dir: Path, out: Path, data: TrainData, samples: int | None = None) -> Path:
    """Compose ``out/report.html`` from the evaluation's saved files and the run's localization and
    robustness results (``cxr robustness`` on the same split), when present.

    Called by evaluation and again by localization: the page is always rendered whole from data,
    never edited after writing.
    """
    from cxrkit.report.evaluation import write_eval_report
    from cxrkit.workflows.robustness import load_robustness

    m = read_json(files.evaluation_file(out))
    figures = evaluation_figures(run_dir, out, data, m["labels"])
    figures.robustness = load_robustness(run_dir, m["split"])
    n = m["config"]["samples"] if samples is None else samples
    return write_eval_report(out / files.REPORT, m, figures, n)


def evaluation_figures(run_dir: Path, out: Path, data: TrainData, labels: list[str]) -> EvalFigures:
    """The report's per-image data from ``out``'s predictions/sweep/worklist CSVs and the run's cache.

    Ids are read back exactly as written (un-escaped, "NA" kept); an id missing from the cache is
    a ValueError naming predictions.csv.
    """
    from cxrkit.report.evaluation import EvalFigures

    pred = read_csv(out / files.PREDICTIONS, text=["image_id", "patient_id"])
    y = pred[[f"true:{lab}" for lab in labels]].to_numpy(np.float64)
    p = pred[[f"prob:{lab}" for lab in labels]].to_numpy(np.float64)
    row_of = pd.Series(np.arange(len(data.cache.meta)), index=data.cache.meta["image_id"].astype(str))
    rows = row_of.reindex(pred["image_id"]).to_numpy()
    lost = pred["image_id"][np.isnan(rows.astype(np.float64))]
    if len(lost):
        raise ValueError(
            f"{out / files.PREDICTIONS}: {len(lost)} image id(s) not in the run's cache, e.g. "
            f"{lost.iat[0]!r}; expected the ids of the evaluated split"
        )
    loc = run_dir / files.LOCALIZATION
    return EvalFigures(
        targets=y,
        probs=p,
        image_ids=pred["image_id"].tolist(),
        image=lambda i: np.asarray(data.cache.images[int(rows[i])]),
        sweep=read_csv(out / files.SWEEP),
        worklist=read_worklist(out / files.WORKLIST),
        localization=read_json(loc) if loc.is_file() else None,
    )


WORKLIST_TEXT = ("image_id", "patient_id", "flag", "top_findings", "path", "truth")  # never missing


def read_worklist(path: Path) -> pd.DataFrame:
    """A worklist.csv as written: its text columns exact strings ("NA" and "" kept), rank/score numbers."""
    present = set(read_csv(path, nrows=0).columns)
    return read_csv(path, text=[c for c in WORKLIST_TEXT if c in present])
