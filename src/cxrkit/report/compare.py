"""The comparison of evaluated runs: a row per run from its evaluation.json, and the page that shows them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.evaluate.metrics import RANKING_METRICS, THRESHOLD_METRICS
from cxrkit.report.html import Section, fig_tag, figure, render_page, table_html

COLUMNS = (*RANKING_METRICS, *THRESHOLD_METRICS, "binary_accuracy", "subset_accuracy", "hamming_loss")


def run_names(runs: Sequence[str | Path]) -> list[str]:
    """Row names: each run's folder name, or its path below the runs' common parent when names collide."""
    paths = [Path(r).absolute() for r in runs]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    parent = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return [p.relative_to(parent).as_posix() for p in paths]


def comparison_row(m: dict, name: str | None = None) -> dict:
    """One run's row, named ``name`` (default: its folder): identity, headline metrics, triage, AUCs."""
    row = {
        "run": name or Path(m["run"]).name,
        "model": m["model"],
        "split": m["split"],
        "images": m["images"],
    }
    for k in ("macro_auc", "micro_auc"):
        row[f"{k}_low"], row[f"{k}_high"] = m[k]["low"], m[k]["high"]
    row.update({k: m["summary"].get(k) for k in COLUMNS})
    tri = m["triage"][m["split"]]
    row.update(
        triage_threshold=m["triage"]["threshold"],
        triage_sensitivity=tri["sensitivity"],
        triage_specificity=tri["specificity"],
        reads_saved_share=tri["reads_saved_share"],
    )
    row.update({f"auc:{r['label']}": r["auc"] for r in m["per_label"]})
    return row


def comparison_page(frame: pd.DataFrame, split: str) -> str:
    """The comparison page: headline metrics per run and per-label ROC-AUC (table and plot)."""
    head = frame.set_index("run")[
        [
            "model",
            "images",
            "macro_auc",
            "macro_auc_low",
            "macro_auc_high",
            *COLUMNS[1:],
            "triage_sensitivity",
            "triage_specificity",
            "reads_saved_share",
        ]
    ]
    per_label = frame.set_index("run")[[c for c in frame.columns if c.startswith("auc:")]]
    per_label.columns = [c[4:] for c in per_label.columns]
    return render_page(
        f"Comparison of {len(frame)} runs ({split})",
        [
            Section("Headline metrics", table_html(head)),
            Section(
                "ROC-AUC per label",
                table_html(per_label.T) + fig_tag(_plot(per_label), "per-label AUC by run"),
            ),
        ],
        subtitle="Thresholds and triage points were tuned on each run's own validation split. Macro "
        "averages cover the findings (No Finding excluded).",
    )


def _plot(per_label: pd.DataFrame):
    fig = figure(9, 3.6)
    ax = fig.subplots()
    x = np.arange(per_label.shape[1])
    for k, (name, row) in enumerate(per_label.iterrows()):
        ax.plot(x + (k - (len(per_label) - 1) / 2) * 0.1, row.astype(float), "o", label=str(name))
    ax.set_xticks(x, per_label.columns, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("ROC-AUC")
    ax.axhline(0.5, color="#bbb", ls="--", lw=0.8)
    ax.legend(fontsize=7)
    return fig
