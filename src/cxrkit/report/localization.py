"""The localization table: one page of its own, and a section the evaluation report includes.

Both are rendered from ``localization.json``'s content; no page is ever edited after writing.
"""

from __future__ import annotations

import html

import pandas as pd

from cxrkit.report.html import Section, render_page, table_html


def localization_section(result: dict) -> Section:
    """The ChestX-ray8-style table: accuracy per finding at each T(IoBB) and T(IoU), boxes last."""
    t = pd.DataFrame(result["table"])
    t["centred box (all)"] = pd.Series(result["baseline_centred_box"])
    counts = ", ".join(f"{k}: {v}" for k, v in result["splits_of_boxed_images"].items())
    note = (
        f'<p class="note">{html.escape(result["method"])} heatmaps for each box\'s own finding, '
        "thresholded at "
        f"{result['fraction']:g} x their maximum ({html.escape(result['fraction_source'])}); the largest "
        f"component's box, in original-image pixels, against the ground truth. A box is localized when IoBB "
        f"(or IoU) exceeds T. {result['boxes']} boxes on {result['images']} images (splits: {counts}). "
        "Last column: a centred box of the ground truth's mean relative size.</p>"
    )
    return Section("Localization (heatmap boxes vs ground truth)", note + table_html(t))


def localization_page(run_name: str, result: dict) -> str:
    """RUN/localization/report.html: the table on a page of its own."""
    return render_page(f"Localization: {run_name}", [localization_section(result)])
