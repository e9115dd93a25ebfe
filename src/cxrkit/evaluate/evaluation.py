"""``evaluate_run``: a run folder in, ``eval-<split>/`` out (metrics.json, CSVs, report.html).

Thresholds and the triage operating point are chosen on the run's *validation* split and applied
unchanged to the evaluated split; evaluating ``val`` itself is allowed (e.g. when a data set has no
held-out test) and the report says that its thresholds were tuned on the same images.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluate.baselines import BASELINES, baseline_scores
from cxrkit.evaluate.bootstrap import ranking_cis, rate_cis
from cxrkit.evaluate.calibration import expected_calibration_error, per_label_ece, reliability_curve
from cxrkit.evaluate.fairness import subgroup_label_auc, subgroup_table
from cxrkit.evaluate.metrics import confusion_counts, summary_metrics, threshold_metrics
from cxrkit.evaluate.thresholds import choose_thresholds, parse_rule
from cxrkit.inference import SplitPredictions, load_run, load_run_data, predict_split
from cxrkit.training.loop import Log
from cxrkit.triage import (
    abnormal_truth,
    abnormality_score,
    build_worklist,
    operating_point,
    triage_counts,
    triage_sweep,
)

FIXED_RULES = ("0.5", "0.2", "max_f1", "youden")
RULE_COLUMNS = (
    "macro_precision",
    "macro_recall",
    "macro_specificity",
    "macro_f1",
    "macro_fbeta",
    "micro_f1",
    "subset_accuracy",
)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how: split, threshold rule, F-beta, triage target, bootstrap size."""

    split: str = "test"
    threshold: str = "max_f1"  # per-label rule, chosen on val: 0.5, 0.2, max_f1, max_f<beta>, youden, ...
    beta: float = 3.0  # F-beta reported beside F1 (3: recall weighs 9x precision, as triage wants)
    target_sensitivity: float = 0.95
    triage_score: str = "auto"  # auto, no_finding, noisy_or, max (see cxrkit.triage)
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"
    samples: int = 12  # images in the prediction grid
    out: str | None = None  # default: <run>/eval-<split>

    def __post_init__(self) -> None:
        parse_rule(self.threshold)
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split {self.split!r}: expected train, val or test")
        if not 0.0 < self.target_sensitivity <= 1.0:
            raise ValueError(f"target sensitivity {self.target_sensitivity}: expected a value in (0, 1]")
        if self.n_boot < 0 or self.beta <= 0:
            raise ValueError("n_boot must be >= 0 and beta > 0")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN -> None, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


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


def _rule_table(val: SplitPredictions, ev: SplitPredictions, labels, cfg: EvalConfig) -> pd.DataFrame:
    rows = []
    rules = dict.fromkeys(
        [*FIXED_RULES, f"max_f{cfg.beta:g}", f"sensitivity:{cfg.target_sensitivity:g}", cfg.threshold]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for rule in rules:
            th = choose_thresholds(val.targets, val.probs, rule, labels)
            m = summary_metrics(ev.targets, ev.probs, th, cfg.beta)
            rows.append({"rule": rule, **{k: m[k] for k in RULE_COLUMNS}})
    return pd.DataFrame(rows)


def _baselines(data, ev: SplitPredictions, labels, abnormal, cfg: EvalConfig) -> pd.DataFrame:
    train_t = data.targets[data.split["train"]]
    rows = []
    for kind in BASELINES:
        s = baseline_scores(kind, train_t, len(ev.probs), labels, cfg.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = summary_metrics(ev.targets, s, 0.5, cfg.beta)
        score, _ = abnormality_score(s, labels, cfg.triage_score)
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


def evaluate_run(run_dir: str | Path, cfg: EvalConfig = EvalConfig(), log: Log = print) -> Path:
    """Evaluate a run on ``cfg.split``; write metrics.json, CSVs and report.html; return the output folder."""
    run = load_run(run_dir, cfg.device)
    out = Path(cfg.out) if cfg.out else run.run_dir / f"eval-{cfg.split}"
    out.mkdir(parents=True, exist_ok=True)
    data = load_run_data(run, log)
    labels = run.labels
    val = predict_split(run, data, "val")
    ev = val if cfg.split == "val" else predict_split(run, data, cfg.split)
    log(f"evaluating {run.run_dir.name} on {cfg.split}: {len(ev.probs):,} images, {len(labels)} labels")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        thresholds = choose_thresholds(val.targets, val.probs, cfg.threshold, labels)
        groups = ev.meta["patient_id"].astype(str).to_numpy()
        cis = ranking_cis(ev.targets, ev.probs, groups, cfg.n_boot, cfg.seed)
        table = per_label_table(labels, ev.targets, ev.probs, thresholds, cis, cfg.beta)
        summary = summary_metrics(ev.targets, ev.probs, thresholds, cfg.beta)
        # triage
        score_val, method = abnormality_score(val.probs, labels, cfg.triage_score)
        score, _ = abnormality_score(ev.probs, labels, method)
        abn_val, abn = abnormal_truth(val.targets, labels), abnormal_truth(ev.targets, labels)
        point = operating_point(abn_val, score_val, cfg.target_sensitivity)
        tri = triage_counts(abn, score, point)
        tri_ci = rate_cis(abn, score >= point, groups, cfg.n_boot, cfg.seed)
        tri_val = triage_counts(abn_val, score_val, point)
        sweep = triage_sweep(abn, score, point)
        subgroups = subgroup_table(ev.meta, ev.targets, ev.probs, thresholds, abn, score, point)
        sub_auc = subgroup_label_auc(ev.meta, ev.targets, ev.probs, labels)
        rules = _rule_table(val, ev, labels, cfg)
        baselines = _baselines(data, ev, labels, abn, cfg)
        calib = reliability_curve(ev.targets, ev.probs)
        ece = expected_calibration_error(ev.targets, ev.probs)
    notes = sorted({str(w.message) for w in caught})
    worklist = build_worklist(ev.meta, ev.probs, labels, score, point, abn)
    conf = confusion_counts(ev.targets, ev.probs, thresholds)
    metrics = {
        "run": str(run.run_dir),
        "model": run.cfg.model.name,
        "split": cfg.split,
        "images": len(ev.probs),
        "patients": int(ev.meta["patient_id"].nunique()),
        "labels": list(labels),
        "config": asdict(cfg),
        "thresholds_tuned_on": "val",
        "summary": summary,
        "macro_auc": cis.macro_auc.as_dict(),
        "micro_auc": cis.micro_auc.as_dict(),
        "macro_ap": cis.macro_ap.as_dict(),
        "micro_ap": cis.micro_ap.as_dict(),
        "calibration": {"ece_pooled": ece, "curve": calib.to_dict(orient="list")},
        "per_label": table.to_dict(orient="records"),
        "confusion": {lab: {k: int(conf[k][j]) for k in conf} for j, lab in enumerate(labels)},
        "threshold_rules": rules.to_dict(orient="records"),
        "baselines": baselines.to_dict(orient="records"),
        "triage": {
            "score": method,
            "target_sensitivity": cfg.target_sensitivity,
            "threshold": point,
            "val": tri_val,
            cfg.split: tri,
            "ci": {k: v.as_dict() for k, v in tri_ci.items()},
        },
        "subgroups": subgroups.to_dict(orient="records"),
        "subgroup_label_auc": sub_auc.to_dict(orient="records"),
        "warnings": notes,
    }
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1))
    table.to_csv(out / "per_label.csv", index=False)
    sweep.to_csv(out / "triage_sweep.csv", index=False)
    worklist.to_csv(out / "worklist.csv", index=False)
    pred = ev.meta[["image_id", "patient_id"]].copy()
    for j, lab in enumerate(labels):
        pred[f"true:{lab}"] = ev.targets[:, j]
        pred[f"prob:{lab}"] = np.round(ev.probs[:, j], 6)
    pred.to_csv(out / "predictions.csv", index=False)
    from cxrkit.report.evaluation import write_eval_report

    write_eval_report(out / "report.html", metrics, ev, val, sweep, worklist, cfg)
    from cxrkit.report.localization import add_saved_localization

    add_saved_localization(run.run_dir, out / "report.html")
    log(
        f"macro ROC-AUC {cis.macro_auc.value:.3f} [{cis.macro_auc.low:.3f}, {cis.macro_auc.high:.3f}]  "
        f"micro {cis.micro_auc.value:.3f}  macro AP {cis.macro_ap.value:.3f}  "
        f"macro F1 {summary['macro_f1']:.3f} ({cfg.threshold} on val)"
    )
    log(
        f"triage ({method}): threshold {point:.4f} for val sensitivity >= {cfg.target_sensitivity:g} "
        f"(val {tri_val['sensitivity']:.3f}) -> {cfg.split} sensitivity {tri['sensitivity']:.3f}, "
        f"specificity {tri['specificity']:.3f}, reads saved {tri['reads_saved_share']:.1%}, "
        f"missed {tri['missed']} of {tri['abnormal']} abnormal"
    )
    log(f"wrote {out}: report.html, metrics.json, per_label/worklist/triage_sweep/predictions.csv")
    return out
