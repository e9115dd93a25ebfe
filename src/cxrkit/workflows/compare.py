"""``cxr compare``: several runs side by side (runs not yet evaluated on the split are evaluated first).

An evaluation records the sha256 of the best.pt it scored; a run whose best.pt has changed since is
refused (its saved numbers describe other weights). Rows are named by run folder, and by the path
below the runs' common parent when two folders share a name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.outputs import make_out_dir, write_csv, write_text
from cxrkit.report.compare import comparison_page, comparison_row, run_names
from cxrkit.run import files
from cxrkit.run.onnx import weights_digest

Log = Callable[[str], None]


def _metrics(run: Path, split: str) -> Path:
    return files.evaluation_file(files.eval_dir(run, split))


def read_evaluation(run: Path, split: str) -> dict:
    """A run's saved ``eval-SPLIT/evaluation.json``; one clear error if it is unreadable."""
    path = _metrics(run, split)
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: not readable JSON ({err}); re-run `cxr evaluate {run} --split {split}`"
        ) from None
    if not isinstance(m, dict):
        raise ValueError(f"{path}: expected a JSON object; re-run `cxr evaluate {run} --split {split}`")
    return m


def stale_problem(run: Path, m: dict, split: str) -> str | None:
    """Why ``m`` (the run's saved evaluation) does not describe its current best.pt, or None.

    An evaluation without a fingerprint (from an older cxrkit) cannot be checked: None.
    """
    stamp = m.get("weights_sha256")
    if stamp is None or stamp == weights_digest(run):
        return None
    return (
        f"{run}: best.pt has changed since {_metrics(run, split)} was computed "
        f"(sha256 differs); re-run `cxr evaluate {run} --split {split}`"
    )


def _checked_evaluation(run: Path, split: str, log: Log) -> dict:
    """The run's saved evaluation; refused if its best.pt has changed since, a warning if unknown."""
    m = read_evaluation(run, split)
    problem = stale_problem(run, m, split)
    if problem:
        raise ValueError(problem)
    if "weights_sha256" not in m:
        log(
            f"warning: {_metrics(run, split)} does not record which best.pt it scored (older cxrkit); "
            f"re-run `cxr evaluate {run} --split {split}` to be sure it is current"
        )
    return m


def _row(m: dict, name: str, run: Path, split: str) -> dict:
    try:
        return comparison_row(m, name)
    except (KeyError, TypeError) as err:
        redo = f"re-run `cxr evaluate {run} --split {split}`"
        raise ValueError(f"{_metrics(run, split)}: incomplete evaluation (no {err}); {redo}") from None


def refuse_duplicates(runs: Sequence[Path]) -> None:
    """One clear error if a run folder is given twice (under any spelling or link)."""
    seen: dict[Path, Path] = {}
    for r in runs:
        if r.resolve() in seen:
            raise ValueError(f"{r}: the same run is given twice (also as {seen[r.resolve()]})")
        seen[r.resolve()] = r


def default_out(runs: Sequence[Path], split: str) -> Path:
    """``PARENT/comparison-SPLIT``, PARENT being the common parent folder of the runs."""
    parent = os.path.commonpath([str(r.absolute().parent) for r in runs])
    return Path(parent) / f"comparison-{split}"


def compare_runs(
    runs: Sequence[str | Path],
    split: str = "test",
    out: str | Path | None = None,
    evaluate: Callable[[Path], Path] | None = None,
    log: Log = print,
) -> tuple[pd.DataFrame, Path]:
    """Read each run's eval-<split>/evaluation.json (evaluating first via ``evaluate`` when missing).

    Every saved evaluation is checked against its run's best.pt before anything is evaluated or written.
    """
    paths = [files.check_run_folder(Path(r), (files.PACKAGE,)) for r in runs]
    refuse_duplicates(paths)
    saved = {r: _checked_evaluation(r, split, log) for r in paths if _metrics(r, split).is_file()}
    missing = [r for r in paths if r not in saved]
    if missing and evaluate is None:
        raise FileNotFoundError(
            f"{_metrics(missing[0], split)} is missing: run `cxr evaluate {missing[0]} --split {split}` first"
        )
    names = dict(zip(paths, run_names(paths), strict=True))
    rows = {r: _row(m, names[r], r, split) for r, m in saved.items()}  # all checked before writing
    out = make_out_dir(out if out else default_out(paths, split))
    for r in missing:
        evaluate(r)
        rows[r] = _row(_checked_evaluation(r, split, log), names[r], r, split)
    frame = pd.DataFrame([rows[r] for r in paths]).astype(object).where(lambda d: d.notna(), np.nan)
    write_csv(out / files.COMPARISON_CSV, frame, index=False)
    write_text(out / files.COMPARISON_HTML, comparison_page(frame, split))
    return frame, out
