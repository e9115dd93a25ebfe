"""The robustness report: AUC and triage rates under acquisition shifts, from robustness.json and .csv.

One page of its own (``RUN/robustness-SPLIT/report.html``) and a section the evaluation report
includes. Both are rendered from the data handed in; no page is ever edited after writing.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.evaluate.robustness import corrupted_rows, severity_grid
from cxrkit.report.html import Section, figure, figure_png, img_tag, kpis, render_page, table_html, write_page

_PANELS = (
    ("macro_auc", "macro ROC-AUC"),
    ("triage_sensitivity", "triage sensitivity"),
    ("triage_specificity", "triage specificity"),
)


def _num(v: float | None, pct: bool = False) -> str:
    if v is None or v != v:
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def plot_robustness(table: pd.DataFrame):
    """AUC, triage sensitivity and specificity against severity: a line per shift, clean dashed."""
    fig = figure(12.5, 4.0)
    axes = fig.subplots(1, len(_PANELS))
    rows = corrupted_rows(table)
    clean = table[table["severity"] == 0]
    names = list(dict.fromkeys(rows["shift"]))
    styles = ("-", "--", ":", "-.")
    for ax, (col, title) in zip(axes, _PANELS, strict=True):
        for k, name in enumerate(names):
            r = rows[rows["shift"] == name].sort_values("severity")
            ax.plot(
                r["severity"],
                r[col],
                marker="o",
                ms=3,
                lw=1.2,
                ls=styles[(k // 10) % 4],
                color=f"C{k % 10}",
                label=name,
            )
        if len(clean) and np.isfinite(clean[col].iloc[0]):
            ax.axhline(clean[col].iloc[0], color="black", ls="--", lw=1.0, label="clean")
        if col == "macro_auc":
            ax.axhline(0.5, color="#999", ls=":", lw=0.8)  # chance
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("severity")
        ax.set_xticks(sorted(rows["severity"].unique()) or [1])
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def robustness_png(table: pd.DataFrame) -> bytes:
    """``plot_robustness`` as PNG bytes."""
    return figure_png(plot_robustness(table))


def _grid_frame(table: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """Shift x severity macro AUC, with the shift's kind and its mean over severities."""
    grid = severity_grid(table)
    grid.columns = [f"severity {int(c)}" for c in grid.columns]
    kinds = {r["shift"]: r["kind"] for _, r in table.iterrows()}
    grid.insert(0, "kind", [kinds.get(n, "") for n in grid.index])
    grid["mean"] = [summary["per_shift_auc"].get(n, float("nan")) for n in grid.index]
    return grid.astype(object).where(lambda d: d.notna(), float("nan"))


def _rates_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Shift x severity "sensitivity / specificity" at the stored operating point, clean first."""
    sens, spec = severity_grid(table, "triage_sensitivity"), severity_grid(table, "triage_specificity")
    cells = pd.DataFrame(
        [
            [f"{_num(a, True)} / {_num(b, True)}" for a, b in zip(sens.loc[n], spec.loc[n], strict=True)]
            for n in sens.index
        ],
        index=sens.index,
        columns=[f"severity {int(c)}" for c in sens.columns],
    )
    clean = table[table["severity"] == 0].iloc[0]
    cells.insert(
        0, "clean", f"{_num(clean['triage_sensitivity'], True)} / {_num(clean['triage_specificity'], True)}"
    )
    return cells


def _shifts_list(summary: dict) -> str:
    """What each shift simulates and its parameter at each severity, as a list."""
    items = "".join(
        f"<li><b>{html.escape(name)}</b> ({html.escape(s['kind'])}): {html.escape(s['simulates'])}; "
        f"severity 1..5: {html.escape(', '.join(f'{v:g}' for v in s['levels']))}</li>"
        for name, s in summary["shifts"].items()
    )
    return f"<ul>{items}</ul>"


def robustness_kpis(summary: dict) -> str:
    """Clean AUC, mCA, relative drop, and triage sensitivity/specificity clean vs mean corrupted."""
    sens, spec = summary["triage_sensitivity"], summary["triage_specificity"]
    return kpis(
        [
            ("macro ROC-AUC, clean", _num(summary["clean_auc"])),
            ("mCA (mean corruption AUC)", _num(summary["mca"])),
            ("relative drop (clean - mCA) / clean", _num(summary["relative_drop"], True)),
            (
                "triage sensitivity: clean / mean shifted",
                f"{_num(sens['clean'], True)} / {_num(sens['mean_corrupted'], True)}",
            ),
            (
                "triage specificity: clean / mean shifted",
                f"{_num(spec['clean'], True)} / {_num(spec['mean_corrupted'], True)}",
            ),
        ]
    )


def _note(summary: dict) -> str:
    point = summary["operating_point"]
    sev = ", ".join(str(s) for s in summary["severities"])
    return (
        f'<p class="note">{summary["images"]:,} images of the {html.escape(summary["split"])} split, each '
        f"shift at severities {sev} (seed {summary['seed']}); the clean row scores the untouched images. "
        "mCA is the mean macro ROC-AUC over every shift and severity shown. Triage uses the run's stored "
        f"operating point ({html.escape(point['score'])}, t = {point['threshold']:.4g}, chosen on clean "
        f"validation images for sensitivity {point['target_sensitivity']:g}), applied unchanged.</p>"
    )


def robustness_section(summary: dict, table: pd.DataFrame, png: bytes | None) -> Section:
    """Robustness to acquisition shift: headline, AUC grid, triage rates, plot (drawn if ``png`` is None)."""
    png = robustness_png(table) if png is None else png
    body = (
        robustness_kpis(summary)
        + _note(summary)
        + "<h3>Macro ROC-AUC by shift and severity</h3>"
        + table_html(_grid_frame(table, summary))
        + img_tag(png, "AUC and triage rates against shift severity")
        + "<h3>Triage sensitivity / specificity at the stored operating point</h3>"
        + table_html(_rates_frame(table))
        + "<h3>What each shift simulates</h3>"
        + _shifts_list(summary)
    )
    return Section("Robustness to acquisition shift", body)


def robustness_page(summary: dict, table: pd.DataFrame, png: bytes | None) -> str:
    """RUN/robustness-SPLIT/report.html: the section on a page of its own."""
    name = Path(summary["run"]).name
    return render_page(
        f"Robustness: {name} on {summary['split']}",
        [robustness_section(summary, table, png)],
        subtitle=f"model {summary.get('model', '')} · run {summary['run']}",
    )


def write_robustness_report(path: Path, summary: dict, table: pd.DataFrame, png: bytes | None) -> Path:
    """Write the robustness page to ``path`` (atomically)."""
    return write_page(path, robustness_page(summary, table, png))
