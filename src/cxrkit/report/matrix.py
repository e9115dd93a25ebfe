"""The cross-dataset matrix as Markdown and HTML: runs as rows, datasets as columns (as in Cohen et al.,
MIDL 2020), each cell a ROC-AUC with its 95% CI, or the operating point's sensitivity/specificity."""

from __future__ import annotations

import html

import pandas as pd

from cxrkit.report.html import Section, render_page, table_html, value_ci

NOTE = (
    "Each cell: the run scored on that dataset's labelled images at the run's stored decisions "
    "(cxr validate). Macro ROC-AUC covers the findings the run and the dataset share (listed per cell "
    "in matrix.csv); the operating point is the run's stored triage threshold. 95% patient-bootstrap CIs."
)


def matrix_tables(cells: pd.DataFrame, per_label: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Wide tables (runs x datasets) of formatted cells: macro AUC, No Finding AUC, sens/spec, per label."""

    def wide(fmt, frame: pd.DataFrame = cells, index: str | list[str] = "run") -> pd.DataFrame:
        out = frame.assign(cell=frame.apply(fmt, axis=1)).pivot_table(
            index=index, columns="dataset", values="cell", aggfunc="first", sort=False
        )
        out.columns.name = None
        return out.fillna("–")

    return {
        "Macro ROC-AUC (shared findings)": wide(
            lambda r: value_ci(r["macro_auc"], r["macro_auc_low"], r["macro_auc_high"])
        ),
        "No Finding ROC-AUC (normal vs abnormal)": wide(
            lambda r: value_ci(r["no_finding_auc"], r["no_finding_auc_low"], r["no_finding_auc_high"])
        ),
        "Operating point: sensitivity / specificity": wide(
            lambda r: (
                f"{value_ci(r['sensitivity'], r['sensitivity_low'], r['sensitivity_high'])} / "
                f"{value_ci(r['specificity'], r['specificity_low'], r['specificity_high'])}"
            )
        ),
        "ROC-AUC per label": wide(
            lambda r: value_ci(r["auc"], r["auc_low"], r["auc_high"]), per_label, ["run", "label"]
        ),
    }


def matrix_markdown(tables: dict[str, pd.DataFrame], notes: list[str] = ()) -> str:
    """The tables as GitHub Markdown, one heading each; ``notes`` (cells not scored, images the run
    trained on) listed first."""
    parts = ["# Cross-dataset matrix", "", NOTE, "", *[f"- **{n}**" for n in notes], ""]
    for title, frame in tables.items():
        flat = frame.reset_index()
        head = [str(c) for c in flat.columns]
        parts += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in flat.itertuples(index=False):
            parts.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        parts.append("")
    return "\n".join(parts)


def matrix_page(tables: dict[str, pd.DataFrame], notes: list[str] = ()) -> str:
    """The tables as a standalone HTML page, the notes above them."""
    listed = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    sections = [Section("Notes", f"<ul>{listed}</ul>")] if notes else []
    return render_page(
        "Cross-dataset matrix",
        sections + [Section(title, table_html(frame)) for title, frame in tables.items()],
        subtitle=NOTE,
    )
