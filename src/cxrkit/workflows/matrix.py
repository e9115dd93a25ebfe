"""``cxr validate RUN1 RUN2 … --data A B …``: every run on every labelled dataset, one table.

Each pair is an ordinary ``cxr validate`` (its report kept in OUT/RUN__DATASET); the matrix gathers
the macro ROC-AUC over the findings they share, the No Finding AUC and the stored operating point's
sensitivity/specificity, with CIs, into matrix.csv (one row per pair), per_label.csv, matrix.md and
matrix.html. Cross-dataset figures, not in-distribution ones, tell whether a model generalises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.config import DataConfig, EvalConfig, RunConfig
from cxrkit.outputs import make_out_dir, read_json, write_csv, write_text
from cxrkit.report.compare import run_names
from cxrkit.report.matrix import matrix_markdown, matrix_page, matrix_tables
from cxrkit.run import files
from cxrkit.run.data import Log
from cxrkit.workflows.compare import refuse_duplicates
from cxrkit.workflows.validate import site_name, validate_run

LABEL_KEYS = ("label", "positives", "known", "auc", "auc_low", "auc_high")
FIGURES = ("macro_auc", "no_finding_auc", "sensitivity", "specificity")
MATRIX_CSV, MATRIX_MD, MATRIX_HTML, MATRIX_LABELS = "matrix.csv", "matrix.md", "matrix.html", "per_label.csv"


def matrix_row(m: dict, run: str, dataset: str) -> dict:
    """One pair's headline figures from its evaluation.json."""
    nan = {"value": np.nan, "low": np.nan, "high": np.nan}
    tri, ci = m["triage"]["site"], m["triage"]["ci"]
    nf = m.get("no_finding_auc") or nan
    shared = [r["label"] for r in m["per_label"] if r["known"] > 0]
    row = {"run": run, "dataset": dataset, "images": m["images"], "shared_labels": ";".join(shared)}
    for key, v in (
        ("macro_auc", m["macro_auc"]),
        ("no_finding_auc", nf),
        ("sensitivity", {"value": tri["sensitivity"], **ci["sensitivity"]}),
        ("specificity", {"value": tri["specificity"], **ci["specificity"]}),
    ):
        row.update({key: v["value"], f"{key}_low": v["low"], f"{key}_high": v["high"]})
    row["reads_saved_share"] = tri["reads_saved_share"]
    return row


def label_rows(m: dict, run: str, dataset: str) -> list[dict]:
    """Per-label ROC-AUC with CI for the labels the dataset has."""
    known = [r for r in m["per_label"] if r["known"]]
    return [{"run": run, "dataset": dataset, **{k: r[k] for k in LABEL_KEYS}} for r in known]


def dataset_names(dcfgs: Sequence[DataConfig]) -> list[str]:
    """Column names: each dataset's folder name, made unique with a number when two share one."""
    names = [site_name(d.path) if d.path else d.source for d in dcfgs]
    return [n if names.count(n) == 1 else f"{n}-{k + 1}" for k, n in enumerate(names)]


def cross_dataset_matrix(
    runs: Sequence[str | Path],
    dcfgs: Sequence[DataConfig],
    cfg: EvalConfig | None = None,
    out: str | Path | None = None,
    cache_dir: str = RunConfig.cache_dir,
    log: Log = print,
) -> tuple[pd.DataFrame, Path]:
    """Validate every run on every dataset; write the matrix files to ``out``; return (rows, out)."""
    cfg = cfg or EvalConfig()
    if not runs or not dcfgs:
        raise ValueError("a cross-dataset matrix needs at least one run and one dataset")
    paths = [files.check_run_folder(Path(r), (files.PACKAGE,)) for r in runs]
    refuse_duplicates(paths)
    names, sets = run_names(paths), dataset_names(dcfgs)
    parent = os.path.commonpath([str(p.absolute().parent) for p in paths])
    out = make_out_dir(out or Path(parent) / "validation-matrix")
    rows, per_label = [], []
    for run, rname in zip(paths, names, strict=True):
        for dcfg, dname in zip(dcfgs, sets, strict=True):
            log(f"== {rname} on {dname}")
            pair_out = out / f"{rname.replace('/', '-')}__{dname}"
            pair_cfg = EvalConfig(**{**cfg.__dict__, "out": str(pair_out)})
            try:
                folder = validate_run(run, dcfg, pair_cfg, cache_dir, log)
            except ValueError as err:  # e.g. no shared label: a row that says so, not a lost matrix
                log(f"not scored: {err}")
                rows.append({"run": rname, "dataset": dname, "images": 0, "note": str(err)})
                continue
            m = read_json(files.evaluation_file(folder))
            overlap = m["site"].get("training_overlap") or {}
            note = (
                f"{sum(overlap.values()):,} of these images are the run's own training/validation images"
                if sum(overlap.values())
                else ""
            )
            rows.append({**matrix_row(m, rname, dname), "note": note})
            per_label += label_rows(m, rname, dname)
    frame = pd.DataFrame(rows)
    labels = pd.DataFrame(per_label, columns=["run", "dataset", *LABEL_KEYS])
    write_csv(out / MATRIX_CSV, frame, index=False)
    write_csv(out / MATRIX_LABELS, labels, index=False)
    tables = matrix_tables(frame.reindex(columns=_COLUMNS), labels)
    notes = [f"{r['run']} on {r['dataset']}: {r['note']}" for r in rows if r["note"]]
    write_text(out / MATRIX_MD, matrix_markdown(tables, notes))
    write_text(out / MATRIX_HTML, matrix_page(tables, notes))
    log(f"wrote {out}: {MATRIX_CSV}, {MATRIX_LABELS}, {MATRIX_MD}, {MATRIX_HTML}")
    return frame, out


_COLUMNS = [
    "run",
    "dataset",
    *[f"{k}{s}" for k in FIGURES for s in ("", "_low", "_high")],
]
