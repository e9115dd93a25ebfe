"""``cxr triage``: a worklist for a run's split or for new images, at an operating point chosen on validation.

The operating point (threshold on the abnormality score for a target sensitivity) is computed on
the run's validation split and saved as ``operating_point.json`` in the run folder, so triage of
new images re-uses it without needing the training data again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.inference import LoadedRun, load_run, load_run_data, predict_files, predict_split
from cxrkit.report.html import figure_png
from cxrkit.report.plots import plot_triage_sweep
from cxrkit.training.loop import Log, TrainData
from cxrkit.triage import (
    abnormal_truth,
    abnormality_score,
    build_worklist,
    operating_point,
    resolve_score_method,
    triage_counts,
    triage_sweep,
)

POINT_FILE = "operating_point.json"


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the abnormality score and how it was chosen."""

    score: str
    target_sensitivity: float
    threshold: float
    val_sensitivity: float
    val_specificity: float
    val_images: int


def compute_operating_point(
    run: LoadedRun, target: float, score: str, log: Log, data: TrainData | None = None
) -> OperatingPoint:
    """Choose the threshold on the run's validation split and save it in the run folder."""
    val = predict_split(run, data or load_run_data(run, log), "val")
    s, method = abnormality_score(val.probs, run.labels, score)
    truth = abnormal_truth(val.targets, run.labels)
    t = operating_point(truth, s, target)
    c = triage_counts(truth, s, t)
    point = OperatingPoint(method, target, t, c["sensitivity"], c["specificity"], c["images"])
    (run.run_dir / POINT_FILE).write_text(json.dumps(point.__dict__, indent=1))
    return point


def get_operating_point(
    run: LoadedRun, target: float, score: str, log: Log, data: TrainData | None = None
) -> OperatingPoint:
    """The saved operating point when it matches ``target`` and ``score``, else a freshly computed one."""
    path = run.run_dir / POINT_FILE
    if path.is_file():
        saved = OperatingPoint(**json.loads(path.read_text()))
        if saved.target_sensitivity == target and saved.score == resolve_score_method(run.labels, score):
            return saved
    return compute_operating_point(run, target, score, log, data)


def triage(
    run_dir: str | Path,
    images: list[str] | None = None,
    split: str = "test",
    target: float = 0.95,
    score: str = "auto",
    out: str | Path | None = None,
    device: str = "auto",
    log: Log = print,
) -> Path:
    """Write worklist.csv, triage.json and (with known truth) triage_sweep.csv/.png; return the folder."""
    run = load_run(run_dir, device)
    data = None if images else load_run_data(run, log)
    point = get_operating_point(run, target, score, log, data)
    if images:
        pred = predict_files(run, list(images))
        for path, reason in pred.failures:
            log(f"skipped {path}: {reason}")
        meta, probs, truth = pred.meta, pred.probs, None
        name = "triage-images"
    else:
        ev = predict_split(run, data, split)
        meta, probs = ev.meta, ev.probs
        truth = abnormal_truth(ev.targets, run.labels)
        name = f"triage-{split}"
    folder = Path(out) if out else run.run_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    s, _ = abnormality_score(probs, run.labels, point.score)
    worklist = build_worklist(meta, probs, run.labels, s, point.threshold, truth)
    worklist.to_csv(folder / "worklist.csv", index=False)
    flagged = int((s >= point.threshold).sum())
    summary: dict = {"operating_point": point.__dict__, "images": len(s), "flagged": flagged}
    log(
        f"operating point: {point.score} score >= {point.threshold:.4f} (validation sensitivity "
        f"{point.val_sensitivity:.3f} >= target {target:g} on {point.val_images:,} images)"
    )
    if truth is not None and np.isfinite(truth).any():
        sweep = triage_sweep(truth, s, point.threshold)
        sweep.to_csv(folder / "triage_sweep.csv", index=False)
        (folder / "triage_sweep.png").write_bytes(figure_png(plot_triage_sweep(sweep, split)))
        c = triage_counts(truth, s, point.threshold)
        summary[split] = c
        log(
            f"{split}: {c['images']:,} studies, {c['flagged']:,} flagged; "
            f"sensitivity {c['sensitivity']:.3f}, "
            f"specificity {c['specificity']:.3f}; reads saved {c['reads_saved']:,} "
            f"({c['reads_saved_share']:.1%}); missed {c['missed']} of {c['abnormal']} abnormal"
        )
    else:
        log(f"{len(s):,} images, {flagged:,} flagged abnormal ({flagged / max(len(s), 1):.1%})")
    (folder / "triage.json").write_text(json.dumps(summary, indent=1, default=float))
    log(f"worklist (most urgent first): {folder / 'worklist.csv'}")
    return folder
