"""The evaluation report: one self-contained HTML page built from an evaluation's numbers and figures."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.evaluate.triage import top_findings
from cxrkit.report.html import Section, fig_tag, kpis, render_page, table_html, write_page
from cxrkit.report.localization import localization_section
from cxrkit.report.plots import (
    plot_auc_forest,
    plot_calibration,
    plot_confusion_grid,
    plot_pr_grid,
    plot_roc_grid,
    plot_sample_grid,
    plot_triage_sweep,
)
from cxrkit.report.robustness import robustness_section


@dataclass
class EvalFigures:
    """What the report draws besides evaluation.json: per-image truth and probabilities, images, tables."""

    targets: np.ndarray  # (N, L)
    probs: np.ndarray  # (N, L) calibrated
    image_ids: list[str]
    image: Callable[[int], np.ndarray]  # i -> (S, S) uint8
    sweep: pd.DataFrame
    worklist: pd.DataFrame
    localization: dict | None = None
    robustness: tuple[dict, pd.DataFrame, bytes | None] | None = None  # (robustness.json, .csv, .png)


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


def _samples(fig: EvalFigures, labels, n: int) -> tuple[list[np.ndarray], list[str]]:
    """A spread of images: the most confident abnormal, normal and a few in between."""
    if n <= 0 or len(fig.probs) == 0:
        return [], []
    idx = np.linspace(0, len(fig.probs) - 1, min(n, len(fig.probs))).round().astype(int)
    tops = top_findings(fig.probs[idx], labels, 2)
    images, caps = [], []
    for k, i in enumerate(idx):
        truth = [lab for j, lab in enumerate(labels) if fig.targets[i, j] > 0.5] or ["(none)"]
        images.append(fig.image(int(i)))
        caps.append(f"{fig.image_ids[i]}\ntrue: {', '.join(truth)[:40]}\npred: {tops[k][:40]}")
    return images, caps


def _calibration(m: dict) -> str:
    c = m["calibration"]
    curve, before = pd.DataFrame(c["curve"]), pd.DataFrame(c["curve_before"])
    table = pd.DataFrame(c["table"])
    near = table[table["predicted"] == "0.7-0.8"] if len(table) else table
    answer = ""
    if len(near):
        r = near.iloc[0]
        answer = (
            f"<p><b>What does 0.7 mean?</b> On these held-out images, image-label pairs scored 0.7-0.8 "
            f"(mean {r['mean_predicted']:.2f}) were positive <b>{100 * r['observed_positive_rate']:.0f}%</b> "
            f"of the time ({int(r['pairs']):,} pairs).</p>"
        )
    temps = ", ".join(f"{lab} {t:.2f}" for lab, t in zip(m["labels"], c["temperatures"], strict=True))
    ece_b = c["ece_pooled_before"] if c["ece_pooled_before"] is not None else float("nan")
    ece_a = c["ece_pooled"] if c["ece_pooled"] is not None else float("nan")
    return (
        fig_tag(
            plot_calibration(curve, ece_a, before, ece_b), "reliability diagram before and after calibration"
        )
        + answer
        + (table_html(table.set_index("predicted")) if len(table) else "")
        + '<p class="note">Probabilities are temperature-scaled (per label; softmax models share one), '
        f"fitted on the validation split at the end of training: {html.escape(temps)}. "
        f"ECE over the {len(c['covers'])} averaged labels, "
        f"all known image-label pairs pooled: {ece_b:.3f} before, {ece_a:.3f} after. "
        "Per-label ECE (after): per-label table.</p>"
    )


def _headline_note(m: dict, cfg: dict) -> str:
    covers = m["averaged_labels"]
    nf = m.get("no_finding_auc")
    return (
        f'<p class="note">{m["images"]:,} images of {m["patients"]:,} patients ({m["split"]} split). '
        f"Macro and micro averages cover the {len(covers)} findings"
        + (" (&quot;No Finding&quot; is the normal-vs-abnormal score, shown on its own)" if nf else "")
        + f": {html.escape(', '.join(covers))}. Intervals: percentile bootstrap over patients "
        f"({cfg['n_boot']} replicates). Thresholds chosen on the validation split with rule "
        f"<b>{html.escape(cfg['threshold'])}</b> "
        f"({html.escape(m.get('thresholds_source', 'stored in the run'))}) "
        "and applied unchanged."
        + (
            " <b>This is the validation split itself, so thresholded numbers are optimistic.</b>"
            if m["split"] == "val"
            else ""
        )
        + "</p>"
    )


BASELINE_COLUMNS = [
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


def write_eval_report(path: Path, m: dict[str, Any], fig: EvalFigures, samples: int = 12) -> Path:
    """Render evaluation.json (``m``): curves, matrices, calibration, triage, samples, localization."""
    labels = m["labels"]
    sections = [
        Section("Headline", _headline(m)),
        Section(
            "Per label",
            table_html(per_label_frame(m["per_label"], m["config"]["beta"]))
            + fig_tag(plot_auc_forest(pd.DataFrame(m["per_label"])), "per-label ROC-AUC with intervals"),
        ),
        Section(
            "Summary at the tuned thresholds",
            table_html(pd.DataFrame([m["summary"]]).T.rename(columns={0: m["split"]})),
        ),
        Section(
            "Threshold rules (chosen on validation, applied to this split)",
            table_html(pd.DataFrame(m["threshold_rules"]).set_index("rule")),
        ),
        *_curve_sections(m, fig, labels),
        Section("Calibration", _calibration(m)),
        Section("Baselines (same metrics, same images)", _baselines(m)),
        Section("Subgroups", _subgroups(m)),
        Section("Triage", _triage(m, fig.sweep)),
        Section("Worklist (first 15 rows of worklist.csv)", table_html(fig.worklist.head(15), index=False)),
    ]
    if "site" in m:  # cxr validate: the comparison with the training site comes right after the headline
        from cxrkit.report.site import site_section

        sections.insert(1, site_section(m))
    if fig.localization is not None:
        sections.append(localization_section(fig.localization))
    sections.append(_robustness(m, fig.robustness))
    images, caps = _samples(fig, labels, samples)
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


def _headline(m: dict) -> str:
    """The headline figures: ranking with CIs, F1 at the tuned thresholds, triage at the operating point."""
    s, cfg, t_split, nf = m["summary"], m["config"], m["triage"][m["split"]], m.get("no_finding_auc")
    figures = [
        (f"macro ROC-AUC, {len(m['averaged_labels'])} findings [95% CI]", _ci(m["macro_auc"])),
        ("micro ROC-AUC", _ci(m["micro_auc"])),
        ("macro AP", _ci(m["macro_ap"])),
        (f"macro F1 ({cfg['threshold']})", f"{s['macro_f1']:.3f}"),
        (f"triage sensitivity ({m['split']})", _pct(t_split["sensitivity"])),
        (f"triage specificity ({m['split']})", _pct(t_split["specificity"])),
        ("reads saved", _pct(t_split["reads_saved_share"])),
    ]
    return kpis(figures + ([("No Finding ROC-AUC (normal vs abnormal)", _ci(nf))] if nf else [])) + (
        _headline_note(m, cfg)
    )


def _curve_sections(m: dict, fig: EvalFigures, labels: list[str]) -> list[Section]:
    """ROC and PR curves per label and the confusion matrices."""
    aucs = [r["auc"] or np.nan for r in m["per_label"]]
    aps = [r["ap"] or np.nan for r in m["per_label"]]
    return [
        Section(
            "ROC curves", fig_tag(plot_roc_grid(fig.targets, fig.probs, labels, aucs), "ROC curves per label")
        ),
        Section(
            "Precision-recall curves",
            fig_tag(plot_pr_grid(fig.targets, fig.probs, labels, aps), "PR curves per label"),
        ),
        Section(
            "Confusion matrices (tuned thresholds)",
            fig_tag(plot_confusion_grid(m["confusion"]), "confusion matrices"),
        ),
    ]


def _baselines(m: dict) -> str:
    """This run beside the naive baselines, on the same metrics and images."""
    t_split = m["triage"][m["split"]]
    this = {
        "model": f"this run ({m['model']})",
        **m["summary"],
        "triage_sensitivity": t_split["sensitivity"],
        "triage_specificity": t_split["specificity"],
        "reads_saved_share": t_split["reads_saved_share"],
    }
    frame = pd.DataFrame([this, *m["baselines"]]).set_index("model")[BASELINE_COLUMNS]
    return table_html(frame) + (
        '<p class="note">majority: each label\'s training majority class for every image; '
        "prevalence: random with the training prevalence; always_abnormal: every study flagged.</p>"
    )


def _robustness(m: dict, result: tuple[dict, pd.DataFrame, bytes | None] | None) -> Section:
    """``cxr robustness``'s section for this split, or one line saying how to add it (or that it is stale)."""
    command = f"<code>cxr robustness {html.escape(m['run'])} --split {html.escape(m['split'])}</code>"
    if result is None:
        return Section(
            "Robustness to acquisition shift",
            f'<p class="note">Run {command} to add AUC and triage under acquisition shifts '
            "(then <code>cxr evaluate</code> again).</p>",
        )
    summary, table, png = result
    if summary.get("weights_sha256") != m.get("weights_sha256"):
        return Section(
            "Robustness to acquisition shift",
            '<p class="note">The robustness results of this split were computed with other weights; '
            f"run {command} again to add them.</p>",
        )
    return robustness_section(summary, table, png)


def _subgroups(m: dict) -> str:
    sub = pd.DataFrame(m["subgroups"])
    if sub.empty:
        return '<p class="note">The metadata has no sex, age or view columns.</p>'
    return table_html(sub.set_index(["attribute", "group"])) + (
        '<p class="note">Slices under 10 images show counts only. Triage rates use the operating point '
        "chosen on the whole validation split.</p>"
    )


def _triage(m: dict, sweep: pd.DataFrame) -> str:
    tri = m["triage"]
    split = m["split"]
    t, v, ci = tri[split], tri["val"], tri["ci"]
    text = (
        f"<p>Abnormality score: <b>{html.escape(tri['score'])}</b>. Operating point: the highest threshold "
        f"whose validation sensitivity is at least {tri['target_sensitivity']:g}: "
        f"<b>t = {_sig(tri['threshold'])}</b> (validation sensitivity {_pct(v['sensitivity'])}, "
        f"specificity {_pct(v['specificity'])}; {html.escape(tri.get('source', 'stored in the run'))})."
        + (
            ""
            if tri.get("reached_on_val", True)
            else " <b>The target sensitivity was not reached on validation.</b>"
        )
        + "</p>"
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
