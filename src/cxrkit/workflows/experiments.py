"""Experiment grids: run a list of configs and write one comparison table (CSV, Markdown, HTML).

A grid YAML names a ``base`` config (path relative to the grid file) and ``runs``, each a
``name`` plus ``section.key`` overrides::

    base: phantom.yaml
    runs:
      - {name: 3 blocks 32-64-128, model.name: cnn3_32_64_128}
      - {name: batch 32, train.batch_size: 32}
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrkit.config import build_run_config, load_yaml
from cxrkit.config_check import coerce_value
from cxrkit.outputs import make_out_dir, read_json, write_csv, write_text
from cxrkit.report.html import Section, render_page, table_html, write_page
from cxrkit.run import files

COLUMNS = [
    "name",
    "model",
    "changes",
    "parameters",
    "epochs_run",
    "train_seconds",
    "val_loss",
    "binary_accuracy",
    "macro_auc",
    "micro_auc",
    "micro_precision",
    "macro_precision",
    "micro_recall",
    "macro_recall",
    "micro_f1",
    "macro_f1",
]


def load_grid(path: str | Path) -> tuple[dict, list[dict]]:
    """The base config mapping and the run list of a grid file."""
    path = Path(path)
    grid = load_yaml(path)
    runs = grid.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: a grid needs a non-empty `runs:` list")
    base = load_yaml(path.parent / grid["base"]) if grid.get("base") else {}
    for key in ("out", "cache_dir"):
        if key in grid:
            base[key] = grid[key]
    for k, run in enumerate(runs):
        if not isinstance(run, dict) or "name" not in run:
            raise ValueError(f"{path}: run {k + 1} needs a `name:`")
        run["name"] = coerce_value(run["name"], str, f"{path}: runs[{k}].name")  # 1.10 stays "1.10"
    return base, runs


def run_grid(path: str | Path, *, out: str | None = None, overrides: dict | None = None, log=print) -> Path:
    """Train every run of the grid; write comparison.{csv,md,html} in the grid's output folder."""
    from cxrkit.training.loop import fit

    base, runs = load_grid(path)
    root = Path(out or base.get("out") or f"runs/{Path(path).stem}")
    rows = []
    for k, run in enumerate(runs):
        changes = {key: v for key, v in run.items() if key != "name"}
        cfg = build_run_config(
            base,
            {**(overrides or {}), **changes, "out": str(root), "name": f"{k + 1:02d}-{_slug(run['name'])}"},
        )
        log(f"[{k + 1}/{len(runs)}] {run['name']}: {changes or 'base config'}")
        run_dir = fit(cfg, log=log)
        rows.append(comparison_row(run["name"], cfg.model.name, changes, run_dir))
        write_comparison(pd.DataFrame(rows), root)  # after each run: a partial table survives a crash
    return root


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40]


def comparison_row(name: str, model: str, changes: dict, run_dir: Path) -> dict:
    """One table row from a run folder's summary.json."""
    s = read_json(run_dir / files.SUMMARY)
    row = {
        "name": name,
        "model": model,
        "changes": ", ".join(f"{k}={v}" for k, v in changes.items()) or "-",
        "parameters": s["parameters"],
        "epochs_run": s["epochs_run"],
        "train_seconds": s["train_seconds"],
    }
    row.update({k: s["val"].get(k) for k in COLUMNS if k in s["val"]})
    row["run"] = str(run_dir)
    return row


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 places)."""

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join(
        "| " + " | ".join(fmt(v) for v in r) + " |\n" for r in frame.itertuples(index=False)
    )


def write_comparison(frame: pd.DataFrame, root: Path) -> None:
    """comparison.csv, comparison.md and comparison.html in ``root``."""
    make_out_dir(root)
    cols = [c for c in COLUMNS if c in frame.columns] + ["run"]
    frame = frame[cols]
    write_csv(root / files.COMPARISON_CSV, frame, index=False)
    write_text(root / "comparison.md", to_markdown(frame.drop(columns="run")))
    note = (
        "Validation metrics of each run's best epoch; precision, recall and F1 at the run's threshold "
        "(train.threshold, 0.5 by default). Binary accuracy is label-wise."
    )
    write_page(
        root / files.COMPARISON_HTML,
        render_page(
            "cxrkit experiment comparison",
            [
                Section(
                    "Runs",
                    table_html(frame.drop(columns="run"), "{:.4f}", index=False)
                    + f'<p class="note">{note}</p>',
                )
            ],
        ),
    )
