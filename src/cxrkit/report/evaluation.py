"""The evaluation report: one self-contained HTML page built from an evaluation's numbers and figures."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.report.html import Section, fig_tag, kpis, render_page, table_html, write_page
from cxrkit.report.plots import (
    plot_auc_forest,
    plot_calibration,
    plot_confusion_grid,
    plot_pr_grid,
    plot_roc_grid,
    plot_sample_grid,
    plot_triage_sweep,
)
from cxrkit.triage import top_findings


def _ci(v: dict | None) -> str:
    if not v or v.get("value") is None:
        return "–"
    if v.get("low") is None:
        return f"{v['value']:.3f}"
    return f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def _sig(v: float) -> str:
    """Scores near 0 or 1 need more than three decimals to tell thresholds apart."""
    return f"{v:.6f}" if 0.999 < v < 1.0 or 0 < v < 0.001 else f"{v:.4f}"


def _pct(v: float | None) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def per_label_frame(per_label: list[dict], beta: float) -> pd.DataFrame:
    """The per-label table as shown: AUC and AP with intervals, tuned threshold, P/R/F1, support."""
    rows = []
    for r in per_label:
        rows.append(
            {
                "label": r["label"],
                "ROC-AUC [95% CI]": _ci({"value": r["auc"], "low": r["auc_low"], "high": r["auc_high"]}),
                "AP [95% CI]": _ci({"value": r["ap"], "low": r["ap_low"], "high": r["ap_high"]}),
                "threshold": r["threshold"],
                "precision": r["precision"],
                "recall": r["recall"],
                "specificity": r["specificity"],
                "F1": r["f1"],
                f"F{beta:g}": r["fbeta"],
                "ECE": r["ece"],
                "positives": r["positives"],
                "known": r["known"],
            }
        )
    return pd.DataFrame(rows).set_index("label").astype(object).where(lambda d: d.notna(), float("nan"))


def _samples(ev, labels, n: int) -> tuple[list[np.ndarray], list[str]]:
    """A spread of images: the most confident abnormal, normal and a few in between."""
    if n <= 0 or len(ev.probs) == 0:
        return [], []
    idx = np.linspace(0, len(ev.probs) - 1, min(n, len(ev.probs))).round().astype(int)
    tops = top_findings(ev.probs[idx], labels, 2)
    images, caps = [], []
    for k, i in enumerate(idx):
        truth = [lab for j, lab in enumerate(labels) if ev.targets[i, j] > 0.5] or ["(none)"]
        images.append(ev.image(i))
        caps.append(f"{ev.meta['image_id'].iloc[i]}\ntrue: {', '.join(truth)[:40]}\npred: {tops[k][:40]}")
    return images, caps


def write_eval_report(path: Path, m: dict[str, Any], ev, val, sweep: pd.DataFrame, worklist, cfg) -> Path:
    """Render metrics.json's content (``m``) with curves, matrices, calibration, triage and samples."""
    labels = m["labels"]
    s, tri = m["summary"], m["triage"]
    t_split = tri[m["split"]]
    same = m["split"] == "val"
    sections = [
        Section(
            "Headline",
            kpis(
                [
                    ("macro ROC-AUC [95% CI]", _ci(m["macro_auc"])),
                    ("micro ROC-AUC", _ci(m["micro_auc"])),
                    ("macro AP", _ci(m["macro_ap"])),
                    (f"macro F1 ({cfg.threshold})", f"{s['macro_f1']:.3f}"),
                    (f"triage sensitivity ({m['split']})", _pct(t_split["sensitivity"])),
                    (f"triage specificity ({m['split']})", _pct(t_split["specificity"])),
                    ("reads saved", _pct(t_split["reads_saved_share"])),
                ]
            )
            + f'<p class="note">{m["images"]:,} images of {m["patients"]:,} patients ({m["split"]} split). '
            "Intervals: percentile bootstrap over patients "
            f"({cfg.n_boot} replicates). Thresholds tuned on the validation split with rule "
            f"<b>{html.escape(cfg.threshold)}</b> and applied unchanged."
            + (
                " <b>This is the validation split itself, so thresholded numbers are optimistic.</b>"
                if same
                else ""
            )
            + "</p>",
        ),
        Section(
            "Per label",
            table_html(per_label_frame(m["per_label"], cfg.beta))
            + fig_tag(plot_auc_forest(pd.DataFrame(m["per_label"])), "per-label ROC-AUC with intervals"),
        ),
        Section(
            "Summary at the tuned thresholds",
            table_html(pd.DataFrame([s]).T.rename(columns={0: m["split"]})),
        ),
        Section(
            "Threshold rules (chosen on validation, applied to this split)",
            table_html(pd.DataFrame(m["threshold_rules"]).set_index("rule")),
        ),
        Section(
            "ROC curves",
            fig_tag(
                plot_roc_grid(ev.targets, ev.probs, labels, [r["auc"] or np.nan for r in m["per_label"]]),
                "ROC curves per label",
            ),
        ),
        Section(
            "Precision-recall curves",
            fig_tag(
                plot_pr_grid(ev.targets, ev.probs, labels, [r["ap"] or np.nan for r in m["per_label"]]),
                "PR curves per label",
            ),
        ),
        Section(
            "Confusion matrices (tuned thresholds)",
            fig_tag(plot_confusion_grid(m["confusion"]), "confusion matrices"),
        ),
        Section(
            "Calibration",
            fig_tag(
                plot_calibration(
                    pd.DataFrame(m["calibration"]["curve"]), m["calibration"]["ece_pooled"] or np.nan
                ),
                "reliability diagram",
            )
            + '<p class="note">All known image-label pairs pooled; per-label ECE: per-label table.</p>',
        ),
        Section(
            "Baselines (same metrics, same images)",
            table_html(
                pd.DataFrame(
                    [
                        {
                            "model": f"this run ({m['model']})",
                            **s,
                            "triage_sensitivity": t_split["sensitivity"],
                            "triage_specificity": t_split["specificity"],
                            "reads_saved_share": t_split["reads_saved_share"],
                        }
                    ]
                    + m["baselines"]
                ).set_index("model")[
                    [
                        "macro_auc",
                        "micro_auc",
                        "macro_ap",
                        "macro_f1",
                        "binary_accuracy",
                        "subset_accuracy",
                        "hamming_loss",
                        "triage_sensitivity",
                        "triage_specificity",
                        "reads_saved_share",
                    ]
                ]
            )
            + '<p class="note">majority: each label\'s training majority class for every image; '
            "prevalence: random with the training prevalence; always_abnormal: every study flagged.</p>",
        ),
        Section("Subgroups", _subgroups(m)),
        Section("Triage", _triage(m, sweep, cfg)),
        Section("Worklist (first 15 rows of worklist.csv)", table_html(worklist.head(15), index=False)),
    ]
    images, caps = _samples(ev, labels, cfg.samples)
    if images:
        sections.append(
            Section("Sample predictions", fig_tag(plot_sample_grid(images, caps), "sample predictions"))
        )
    if m["warnings"]:
        sections.append(
            Section(
                "Warnings", "<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in m["warnings"]) + "</ul>"
            )
        )
    page = render_page(
        f"Evaluation: {Path(m['run']).name} on {m['split']}",
        sections,
        subtitle=f"model {m['model']} · run {m['run']}",
    )
    return write_page(path, page)


def _subgroups(m: dict) -> str:
    sub = pd.DataFrame(m["subgroups"])
    if sub.empty:
        return '<p class="note">The metadata has no sex, age or view columns.</p>'
    return table_html(sub.set_index(["attribute", "group"])) + (
        '<p class="note">Slices under 10 images show counts only. Triage rates use the operating point '
        "chosen on the whole validation split.</p>"
    )


def _triage(m: dict, sweep: pd.DataFrame, cfg) -> str:
    tri = m["triage"]
    split = m["split"]
    t, v, ci = tri[split], tri["val"], tri["ci"]
    text = (
        f"<p>Abnormality score: <b>{html.escape(tri['score'])}</b>. Operating point: the highest threshold "
        f"whose validation sensitivity is at least {tri['target_sensitivity']:g}: "
        f"<b>t = {tri['threshold']:.4f}</b> (validation sensitivity {_pct(v['sensitivity'])}, "
        f"specificity {_pct(v['specificity'])}).</p>"
        f"<p>Applied unchanged to <b>{split}</b>: sensitivity <b>{_pct(t['sensitivity'])}</b> "
        f"[{_pct(ci['sensitivity']['low'])}, {_pct(ci['sensitivity']['high'])}], specificity "
        f"<b>{_pct(t['specificity'])}</b> "
        f"[{_pct(ci['specificity']['low'])}, {_pct(ci['specificity']['high'])}]; "
        f"{t['flagged']:,} of {t['images']:,} studies flagged; <b>{t['reads_saved']:,} reads saved "
        f"({_pct(t['reads_saved_share'])})</b>; "
        f"{t['missed']:,} of {t['abnormal']:,} abnormal studies missed.</p>"
    )
    cols = [
        "threshold",
        "flagged",
        "reads_saved",
        "missed",
        "sensitivity",
        "specificity",
        "reads_saved_share",
        "missed_share",
        "chosen",
    ]
    return (
        text
        + fig_tag(plot_triage_sweep(sweep, split), "triage sweep")
        + table_html(sweep[cols].assign(threshold=sweep["threshold"].map(_sig)), index=False)
    )
