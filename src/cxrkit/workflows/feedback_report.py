"""``cxr feedback DB --report``: how far readers agree with the model, from the feedback store.

Each reader's latest row per study (``feedback.latest_feedback``) is paired with the prediction they
saw (same study, same model digest). Per label, the model's call is probability >= the threshold
stored with that prediction and the reader's is their present / absent mark (unsure and unmarked
left out); agreement and Cohen's kappa with a study-bootstrap interval (``evaluate.agreement``).
Triage: the share of verdicts agreeing with the flag, overall and per flag, with Wilson intervals
over verdicts. Comments and reader names never reach the page.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from cxrkit.evaluate.agreement import binary_agreement, share_ci
from cxrkit.report.feedback import feedback_page
from cxrkit.report.html import write_page
from cxrkit.workflows.feedback import FeedbackStore, latest_feedback
from cxrkit.workflows.feedback_export import ABNORMAL, NORMAL, VALUES


def _paired(store: FeedbackStore) -> tuple[list[dict], list[dict], list[str]]:
    """(all feedback rows, latest rows each with its ``prediction``, every label in the models' order)."""
    preds = store.predictions()
    by_key = {(p["study"], p["model"]["digest"]): p for p in preds}
    latest = {p["study"]: p for p in preds}  # oldest first: the latest wins
    labels = list(dict.fromkeys(lab for p in preds for lab in p["probabilities"]))
    everything = store.feedback()
    rows = [
        {**r, "prediction": by_key.get((r["study"], r["model_digest"]), latest.get(r["study"]))}
        for r in latest_feedback(everything)
    ]
    return everything, [r for r in rows if r["prediction"] is not None], labels


def label_agreement(rows: list[dict], labels: list[str], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Per label with reader marks: model call vs reader mark, counts, agreement and kappa (CI by study)."""
    out = []
    for lab in labels:
        model, reader, studies = [], [], []
        for r in rows:
            mark = VALUES.get(r["findings"].get(lab, ""))
            p = r["prediction"]
            prob, threshold = p["probabilities"].get(lab), p["thresholds"].get(lab)
            if mark is None or prob is None or threshold is None:
                continue
            model.append(float(prob >= threshold))
            reader.append(mark)
            studies.append(r["study"])
        if model:
            out.append(
                {
                    "label": lab,
                    **binary_agreement(np.array(model), np.array(reader), n_boot, seed, np.array(studies)),
                }
            )
    return out


def triage_agreement(rows: list[dict]) -> list[dict]:
    """Share of verdicts agreeing with the model's flag: all, then per flag (abnormal: the flag's precision
    by the readers; normal: the normal calls they confirmed), with 95% Wilson intervals."""
    verdicts = [r for r in rows if r["triage"] is not None]

    def share(what: str, subset: list[dict]) -> dict:
        agree = sum(r["triage"] == "agree" for r in subset)
        return {"calls": what, "agree": agree, **share_ci(agree, len(subset))}

    out = [share("every verdict", verdicts)]
    for flag, what in ((ABNORMAL, "flagged abnormal (flag precision)"), (NORMAL, "called normal")):
        out.append(share(what, [r for r in verdicts if r["prediction"]["flag"] == flag]))
    other = sorted({r["prediction"]["flag"] for r in verdicts} - {ABNORMAL, NORMAL})
    out += [
        share(f"flagged {flag}", [r for r in verdicts if r["prediction"]["flag"] == flag]) for flag in other
    ]
    return out


def feedback_figures(store: FeedbackStore, n_boot: int = 1000, seed: int = 0) -> dict:
    """Everything the feedback report shows, as plain data (no comments, no reader names)."""
    everything, rows, labels = _paired(store)
    times = sorted(r["time"] for r in everything)
    models = Counter((r["model_digest"], r["model_version"]) for r in rows)
    named = {r["reader"] for r in rows if r["reader"] is not None}
    return {
        "database": str(store.path),
        "feedback_rows": len(everything),
        "latest_rows": len(rows),
        "studies": len({r["study"] for r in rows}),
        "predictions": len(store.predictions()),
        "readers": len(named),
        "unnamed": any(r["reader"] is None for r in rows),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "models": [{"digest": d, "version": v, "rows": n} for (d, v), n in models.most_common()],
        "triage": triage_agreement(rows),
        "labels": label_agreement(rows, labels, n_boot, seed),
        "n_boot": n_boot,
    }


def write_feedback_report(
    store: FeedbackStore, out_html: str | Path, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Write the feedback report page to ``out_html``; return its figures."""
    figures = feedback_figures(store, n_boot, seed)
    write_page(out_html, feedback_page(figures))
    return figures
