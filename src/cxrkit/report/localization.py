"""The localization table as a page of its own and as a section inserted into a run's evaluation reports."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from cxrkit.report.html import Section, render_page, table_html, write_page

START, END = "<!--cxr:localization-->", "<!--/cxr:localization-->"


def localization_section(table: pd.DataFrame, baseline: pd.Series, result: dict) -> str:
    """HTML of the ChestX-ray8-style table: accuracy per finding at each T(IoBB) and T(IoU), boxes last."""
    t = table.copy()
    t["centred box (all)"] = baseline
    counts = ", ".join(f"{k}: {v}" for k, v in result["splits_of_boxed_images"].items())
    note = (
        f'<p class="note">{html.escape(result["method"])} heatmaps for each box\'s own finding, '
        "thresholded at "
        f"{result['fraction']:g} x their maximum ({html.escape(result['fraction_source'])}); the largest "
        f"component's box, in original-image pixels, against the ground truth. A box is localized when IoBB "
        f"(or IoU) exceeds T. {result['boxes']} boxes on {result['images']} images (splits: {counts}). "
        "Last column: a centred box of the ground truth's mean relative size.</p>"
    )
    title = "<h2>Localization (heatmap boxes vs ground truth)</h2>"
    return f"{START}<section>{title}{note}{table_html(t)}</section>{END}"


def insert_section(report: Path, section: str) -> None:
    """Put ``section`` into an existing report (replacing an earlier one), atomically."""
    page = report.read_text(encoding="utf-8")
    page = re.sub(re.escape(START) + ".*?" + re.escape(END), "", page, flags=re.S)
    write_page(report, page.replace("</body>", section + "</body>", 1))


def write_localization_report(
    run_dir: Path, table: pd.DataFrame, baseline: pd.DataFrame, result: dict
) -> Path:
    """RUN/localization/report.html, and the section added to every RUN/eval-*/report.html."""
    section = localization_section(table, baseline["all"], result)
    path = write_page(
        run_dir / "localization" / "report.html",
        render_page(f"Localization: {run_dir.name}", [Section("About", "")]).replace(
            "</body>", section + "</body>"
        ),
    )
    for report in sorted(run_dir.glob("eval-*/report.html")):
        insert_section(report, section)
    return path


def add_saved_localization(run_dir: Path, report: Path) -> None:
    """Add the run's saved localization table (if ``cxr localize`` ran) to a freshly written report."""
    saved = run_dir / "localization.json"
    if not saved.is_file():
        return
    result = json.loads(saved.read_text())
    table = pd.DataFrame(result["table"])
    insert_section(report, localization_section(table, pd.Series(result["baseline_centred_box"]), result))
