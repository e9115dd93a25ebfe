"""``cxr triage``: a worklist for a run's split or for new images, at the run's stored operating point.

The operating point (threshold on the abnormality score for a target sensitivity) was chosen on
the validation split at the end of training and stored in ``model.json``, so triage of new images
needs nothing but the run folder. A different target or score is chosen on validation now (which
needs the run's data) and the log says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.evaluate.triage import (
    abnormal_truth,
    abnormality_score,
    add_unscored,
    build_worklist,
    is_flagged,
    triage_counts,
    triage_sweep,
)
from cxrkit.outputs import make_out_dir, printable, write_bytes, write_csv, write_json
from cxrkit.report.html import figure_png
from cxrkit.report.plots import plot_triage_sweep
from cxrkit.run import files
from cxrkit.run.data import Log, load_run_data
from cxrkit.run.inputs import OUT_OF_DISTRIBUTION, Input, manual_read_note
from cxrkit.run.model import RunModel, predict_split
from cxrkit.run.package import NeedsValidation, resolve_operating_point


def triage(
    run: str | Path | RunModel,
    images: Input | Sequence[Input] | None = None,
    split: str = "test",
    target: float | None = None,
    score: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    log: Log = print,
    accept_missing_modality: bool = False,
) -> Path:
    """Write worklist.csv, triage.json and (with known truth) triage_sweep.csv/.png; return the folder.

    New images that cannot be scored (unreadable, or too small to assess) are never dropped: they
    head the worklist as "unreadable: REASON - read manually" and are listed in triage.json.
    """
    run = run if isinstance(run, RunModel) else RunModel.load(run, device)
    if target is not None and not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity {target}: expected a value in (0, 1]")
    if out is not None:
        make_out_dir(out)  # a bad --out fails before any scoring
    data = None if images is not None else load_run_data(run.path, log)
    point, source, data = _operating_point(run, target, score, data, log)
    unscored, truth, name = _no_failures(), None, None  # a split's rows are all scored
    outside, split_ood = _no_failures(), None
    if images is not None:
        prepared = run.prepare(images, accept_missing_modality=accept_missing_modality)
        probs, ood = run.score_prepared(prepared)
        meta = prepared.rows_frame()
        unscored, keep = _unscored(prepared, log), ood.in_distribution
        outside = _out_of_distribution(meta, ood, _score(probs, run, point), log)  # never ranked normal
        probs, meta = probs[keep], meta[keep].reset_index(drop=True)
    else:
        ev = predict_split(run, data, split)
        meta, probs, name = ev.meta, ev.probs, split
        truth = abnormal_truth(ev.targets, run.labels)
        split_ood = ~ev.ood.in_distribution if ev.ood is not None else None  # labelled in the worklist
    folder = make_out_dir(Path(out) if out else files.triage_dir(run.path, name))
    s = _score(probs, run, point)
    worklist = build_worklist(
        meta, probs, run.labels, s, point.threshold, truth, out_of_distribution=split_ood
    )
    worklist = add_unscored(add_unscored(worklist, outside), unscored)
    write_csv(folder / files.WORKLIST, worklist, index=False)
    flagged = int(is_flagged(s, point.threshold).sum())
    summary: dict = {
        "operating_point": point.as_dict(),
        "source": source,
        "target_reached_on_validation": bool(point.reached),
        "images": len(s) + len(unscored) + len(outside),
        "scored": int(np.isfinite(s).sum()) + len(outside),  # out of distribution: scored, read manually
        "flagged": flagged,
        "not_scored": unscored.drop(columns="reason").to_dict("records") + _no_score(meta, s),
        "out_of_distribution": outside.drop(columns=["reason", "score"], errors="ignore").to_dict("records"),
    }
    log(
        f"operating point ({source}): {point.score} score >= {point.threshold:.6g} (validation sensitivity "
        f"{point.val_sensitivity:.3f} for target {point.target_sensitivity:g} on {point.val_images:,} images"
        + ("" if point.reached else "; the target was NOT reached on validation")
        + ")"
    )
    if truth is not None and np.isfinite(truth).any():
        summary[split] = _split_results(folder, truth, s, point.threshold, split, log)
    else:
        log(f"{len(s):,} images scored, {flagged:,} flagged abnormal ({flagged / max(len(s), 1):.1%})")
    if len(unscored):
        log(f"{len(unscored):,} studies NOT scored (unreadable or not assessable): top of the worklist")
    if len(outside):
        log(f"{len(outside):,} studies OUT OF DISTRIBUTION (read manually): next on the worklist")
    write_json(folder / files.TRIAGE, summary)
    log(f"worklist (most urgent first): {folder / files.WORKLIST}")
    return folder


def _score(probs: np.ndarray, run: RunModel, point) -> np.ndarray:
    """The abnormality score of each study by the operating point's rule (empty for no studies)."""
    return abnormality_score(probs, run.labels, point.score)[0] if len(probs) else np.zeros(0)


def _operating_point(run: RunModel, target, score, data, log: Log):
    """(point, where it came from, the run's data if it had to be loaded): stored, else chosen on val now."""
    try:
        point, source = resolve_operating_point(run.package, target, score)
    except NeedsValidation as err:
        try:
            data = data or load_run_data(run.path, log)
        except FileNotFoundError:
            raise err from None
        val = predict_split(run, data, "val").truth_and_probs
        point, source = resolve_operating_point(run.package, target, score, val)
    return point, source, data


def _no_score(meta, s: np.ndarray) -> list[dict]:
    """Studies the model gave no finite score (a NaN network): listed with the unscored, never normal."""
    rows = meta.iloc[np.flatnonzero(np.isnan(s))]
    note = manual_read_note("not scored", "the model gave no finite score")
    return [
        {
            "path": str(r.get("path", "")),
            "image_id": str(r["image_id"]),
            "patient_id": str(r.get("patient_id", "")),
            "status": "not scored",
            "note": note,
        }
        for _, r in rows.iterrows()
    ]


def _no_failures() -> pd.DataFrame:
    """An empty table of unscored inputs (the columns ``_unscored`` gives)."""
    return pd.DataFrame(columns=["path", "image_id", "patient_id", "status", "reason", "note"])


def _unscored(prepared, log: Log):
    """The inputs that could not be scored, each with the note a reader sees; logged one line each."""
    unscored = prepared.failures_frame()
    pairs = zip(unscored["status"], unscored["reason"], strict=True)
    unscored["note"] = [manual_read_note(st, r) for st, r in pairs]
    for path, note in zip(unscored["path"], unscored["note"], strict=True):
        log(f"NOT SCORED {printable(path)}: {note}")
    return unscored


def _out_of_distribution(meta: pd.DataFrame, ood, score: np.ndarray, log: Log) -> pd.DataFrame:
    """Scored studies out of distribution, as rows for the top of the worklist: never ranked normal."""
    out = meta.loc[~ood.in_distribution, ["path", "image_id", "patient_id"]].reset_index(drop=True)
    out["score"] = np.round(score[~ood.in_distribution], 6) if len(score) else np.zeros(0)
    out["status"] = OUT_OF_DISTRIBUTION
    out["reason"] = [r for r, ok in zip(ood.reasons, ood.in_distribution, strict=True) if not ok]
    out["note"] = [manual_read_note(OUT_OF_DISTRIBUTION, r) for r in out["reason"]]
    for path, note in zip(out["path"], out["note"], strict=True):
        log(f"OUT OF DISTRIBUTION {printable(path)}: {note}")
    return out


def _split_results(folder: Path, truth, s, threshold: float, split: str, log: Log) -> dict:
    """With known truth: the sweep (CSV and plot) and the counts at the operating point, logged."""
    sweep = triage_sweep(truth, s, threshold)
    write_csv(folder / files.SWEEP, sweep, index=False)
    write_bytes(folder / files.SWEEP_PLOT, figure_png(plot_triage_sweep(sweep, split)))
    c = triage_counts(truth, s, threshold)
    log(
        f"{split}: {c['images']:,} studies, {c['flagged']:,} flagged; "
        f"sensitivity {c['sensitivity']:.3f}, "
        f"specificity {c['specificity']:.3f}; reads saved {c['reads_saved']:,} "
        f"({c['reads_saved_share']:.1%}); missed {c['missed']} of {c['abnormal']} abnormal"
    )
    return c
