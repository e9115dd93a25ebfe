"""The "training site vs this site" part of a ``cxr validate`` report: figures side by side, the triage
result at the site's prevalence, what could not be scored, and how far the counts pin the rates down."""

from __future__ import annotations

import html

import pandas as pd

from cxrkit.report.html import Section, render_page, table_html


def _pct(v: float | None) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def site_section(m: dict) -> Section:
    """The site block of evaluation.json (``m["site"]``) as one report section."""
    s = m["site"]
    parts = [
        f'<p class="note">Site data: {html.escape(s["source"])} at <code>{html.escape(s["path"])}</code>; '
        f"{s['images_scored']:,} images scored. Decisions (thresholds, calibration, operating point) are the "
        f"run's, applied unchanged; training-site figures from {html.escape(s['validation_from'])}.</p>"
    ]
    overlap = s.get("training_overlap") or {}
    if sum(overlap.values()):
        parts.append(
            f"<p><b>Warning: {overlap.get('train', 0):,} of these images are the run's training "
            f"images and {overlap.get('val', 0):,} its validation images</b> (identical pixels): the "
            "figures below are not another site's, and overstate how the run does elsewhere.</p>"
        )
    ood = m.get("ood")
    if ood:
        parts.append(
            f"<p>Out of distribution at the run's threshold: <b>{ood['flagged']:,} of {ood['images']:,} "
            f"images ({_pct(ood['share'])})</b>, against {_pct(ood.get('val_share'))} of the training site's "
            "validation images. Far more here means this site's images differ from the training ones; "
            "those studies are flagged to be read manually (worklist.csv).</p>"
        )
    if s["missing_labels"]:
        parts.append(
            "<p>Labels this site does not have (not scored here, never guessed): "
            f"<b>{html.escape(', '.join(s['missing_labels']))}</b>.</p>"
        )
    if s["ignored_labels"]:
        parts.append(
            f"<p>Site labels the run does not predict: {html.escape(', '.join(s['ignored_labels']))}.</p>"
        )
    if s["comparison"]:
        frame = pd.DataFrame(s["comparison"]).set_index("metric")
        frame["outside_ci"] = frame["outside_ci"].map({True: "yes", False: "no"})
        parts.append(
            "<p>Training site (validation) vs this site, with this site's 95% patient-bootstrap interval; "
            "<b>outside</b> means the training-site value is not within it.</p>" + table_html(frame)
        )
    parts.append(
        f"<p>At this site's prevalence ({_pct(s['prevalence'])} abnormal): PPV {_pct(s['ppv'])}, NPV "
        f"{_pct(s['npv'])}. With {s['positives']:,} abnormal and {s['negatives']:,} normal studies, "
        f"95% Wilson intervals are {_pct(s['sensitivity_ci_width'])} wide for sensitivity and "
        f"{_pct(s['specificity_ci_width'])} for specificity (<code>cxr validate --plan</code> says how "
        "many a narrower interval needs).</p>"
    )
    if s["missed"]:
        shown = ", ".join(html.escape(i) for i in s["missed"][:50])
        more = f" and {len(s['missed']) - 50:,} more (worklist.csv)" if len(s["missed"]) > 50 else ""
        parts.append(f"<p>Abnormal studies the operating point called normal: {shown}{more}.</p>")
    if s["not_scored"]:
        parts.append(
            f"<p><b>{len(s['not_scored']):,} files were not scored</b> (read them manually):</p>"
            + table_html(pd.DataFrame(s["not_scored"]), index=False)
        )
    return Section("This site vs the training site", "".join(parts))


def recalibration_page(rows: list[dict], site: dict) -> str:
    """``recalibration.html``: where a site-calibrated run came from, and before/after on the images
    neither the parent nor the calibration saw."""
    frame = pd.DataFrame(rows).set_index("metric").drop(columns=["images"], errors="ignore")
    point = site["parent_operating_point"]
    body = (
        f"<p>Parent run <code>{html.escape(site['parent_run'])}</code> (weights sha256 "
        f"<code>{html.escape(site['parent_weights_sha256'][:16])}…</code>), site data "
        f"{html.escape(site['source'])} at <code>{html.escape(site['path'])}</code>. Split by patient "
        f"(seed {site['seed']}): "
        f"{site['calibration_images']:,} calibration images ({site['calibration_patients']:,} patients, "
        f"{site['calibration_abnormal']:,} abnormal) and {site['evaluation_images']:,} evaluation images "
        f"({site['evaluation_patients']:,} patients). Temperatures, per-label thresholds and the triage "
        f"operating point (target sensitivity {point['target_sensitivity']:g}) were refitted on the "
        "calibration part; the weights are the parent's.</p>"
        f"<p>The calibration part pins the new operating point's sensitivity to a 95% Wilson interval "
        f"{_pct(site['sensitivity_ci_width'])} wide (specificity {_pct(site['specificity_ci_width'])}).</p>"
    )
    table = (
        "<p>Both on the evaluation part, with 95% patient-bootstrap intervals: <b>before</b> = the "
        "parent's stored decisions (report in <code>eval-test-parent/</code>), <b>after</b> = this run's "
        "(<code>eval-test/</code>). Temperature scaling keeps each label's ranking, so ROC-AUC moves only "
        "through the triage score's mix of labels.</p>" + table_html(frame)
    )
    return render_page(
        f"Site recalibration: {site['name']}",
        [Section("Where this run came from", body), Section("Before and after", table)],
    )
