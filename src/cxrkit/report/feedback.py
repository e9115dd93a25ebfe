"""``feedback.html``: readers' agreement with the model, rendered from ``workflows.feedback_report``'s
figures. It never shows comments (free text may name a patient) or reader names."""

from __future__ import annotations

import html

import pandas as pd

from cxrkit.report.html import Section, kpis, render_page, table_html, value_ci


def _pct(v: float | None) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}%"


def _share(row: dict) -> str:
    """ "71.4% [53.0%, 84.7%]" (Wilson), or a dash without verdicts."""
    if not row["n"]:
        return "–"
    return f"{_pct(row['value'])} [{_pct(row['low'])}, {_pct(row['high'])}]"


def _summary(f: dict) -> Section:
    span = f"{f['first'][:10]} to {f['last'][:10]}" if f["first"] else "–"
    readers = f"{f['readers']:,}" + (" (and unnamed feedback)" if f["unnamed"] else "")
    parts = [
        kpis(
            [
                ("verdicts used (latest per study and reader)", f"{f['latest_rows']:,}"),
                ("studies", f"{f['studies']:,}"),
                ("named readers", readers),
                ("time span (UTC)", span),
            ]
        ),
        f'<p class="note">Database <code>{html.escape(f["database"])}</code>: {f["feedback_rows"]:,} '
        f"feedback rows on {f['predictions']:,} recorded predictions. A reader who changed their mind "
        "counts once, with their latest verdict; unnamed feedback counts as one reader per study.</p>",
        '<p class="note"><b>Comments are left out of this report</b> (free text may name a patient), and '
        "so are reader names; they stay in the database.</p>",
    ]
    if len(f["models"]) > 1:
        parts.append(
            f"<p><b>Warning: this feedback spans {len(f['models'])} model versions</b> (weights digests "
            "below): the figures pool verdicts on different models. Export or report per model to compare "
            "them.</p>"
        )
    models = pd.DataFrame(
        [
            {"model digest": m["digest"][:16] + "…", "version": m["version"], "verdicts": m["rows"]}
            for m in f["models"]
        ]
    )
    if len(models):
        parts.append(table_html(models, index=False))
    return Section("Summary", "".join(parts))


def _triage(f: dict) -> Section:
    frame = pd.DataFrame(
        [
            {
                "model's calls": r["calls"],
                "verdicts": r["n"],
                "reader agreed": r["agree"],
                "share agreeing [95% CI]": _share(r),
            }
            for r in f["triage"]
        ]
    )
    body = (
        "<p>Of the studies the model <b>flagged abnormal</b>, the share the reader agreed were abnormal is "
        "the flag's precision as the readers see it (PPV-like); of those it <b>called normal</b>, the share "
        "they agreed were normal is NPV-like. Studies readers never judged are not in these figures, so they "
        "describe the studies readers chose to judge. 95% Wilson intervals over verdicts (several readers "
        "of one study count separately).</p>" + table_html(frame, index=False)
    )
    return Section("Triage: do readers agree with the flag?", body)


def _labels(f: dict) -> Section:
    if not f["labels"]:
        return Section(
            "Findings: model vs readers", "<p>No reader marked a finding present or absent yet.</p>"
        )
    frame = pd.DataFrame(
        [
            {
                "label": r["label"],
                "n": r["n"],
                "both present": r["both_present"],
                "model only": r["model_only"],
                "reader only": r["reader_only"],
                "both absent": r["both_absent"],
                "agreement": _pct(r["agreement"]),
                "Cohen's kappa [95% CI]": value_ci(r["kappa"], r["kappa_low"], r["kappa_high"]),
            }
            for r in f["labels"]
        ]
    )
    body = (
        "<p>Model call: probability at or above the threshold stored with the prediction the reader saw; "
        "reader call: the finding marked present or absent (unsure and unmarked are left out). Cohen's "
        f"kappa corrects agreement for chance (undefined, –, when both give one class throughout); its "
        f"interval resamples studies ({f['n_boot']:,} replicates).</p>" + table_html(frame, index=False)
    )
    return Section("Findings: model vs readers", body)


def feedback_page(f: dict) -> str:
    """The whole feedback report page from ``feedback_figures``."""
    return render_page(
        "Readers' feedback on the model",
        [_summary(f), _triage(f), _labels(f)],
        subtitle="Verdicts radiologists gave on the service's answers (cxr serve --feedback).",
    )
