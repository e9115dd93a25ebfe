"""``cxr card RUN``: a model card for a run, every figure read from the run's own files.

Sections follow Mitchell et al. 2019: model details, intended use, factors, metrics, evaluation
data, training data, quantitative analyses, ethical considerations, caveats, and how to reproduce.
A part the run has not computed yet (no evaluation, no localization, no site validation) says so
and names the command that computes it: the card never fills a gap with a typed number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import yaml

from cxrkit.outputs import read_json, write_text
from cxrkit.report.html import value_ci
from cxrkit.report.model_card import CardSection, Table, card_html, card_markdown
from cxrkit.run import files
from cxrkit.run.card import model_warnings
from cxrkit.run.package import read_package

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"


def _num(value: object, digits: int = 3) -> str:
    """A figure as the card prints it; "–" for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _pct(value: object) -> str:
    return "–" if not isinstance(value, (int, float)) or value != value else f"{100 * value:.1f}%"


def _ci(block: dict | None) -> str:
    block = block or {}
    return value_ci(block.get("value"), block.get("low"), block.get("high"))


def _read(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def load_card_inputs(run_dir: str | Path, split: str = "test") -> dict:
    """Everything the card shows, as stored in the run folder (absent parts are None)."""
    run = files.check_run_folder(Path(run_dir), need=(files.PACKAGE,))
    config_path = run / files.CONFIG
    return {
        "run": run,
        "package": read_json(run / files.PACKAGE),
        "warnings": model_warnings(read_package(run)),  # what the viewer shows beside every prediction
        "config": (yaml.safe_load(config_path.read_text()) if config_path.is_file() else None) or {},
        "summary": _read(run / files.SUMMARY),
        "evaluation": _read(files.evaluation_file(files.eval_dir(run, split))),
        "split": split,
        "localization": _read(run / files.LOCALIZATION),
        "export": _read(run / files.EXPORT),
        "sites": {
            p.name.removeprefix("validate-"): read_json(files.evaluation_file(p))
            for p in sorted(run.glob("validate-*"))
            if files.evaluation_file(p).is_file()
        },
    }


def _details(c: dict) -> CardSection:
    pkg, summary, cfg = c["package"], c["summary"] or {}, c["config"]
    model, inp, versions = pkg.get("model") or {}, pkg.get("input") or {}, pkg.get("versions") or {}
    train = cfg.get("train") or {}
    lo, hi = (inp.get("value_range") or ["?", "?"])[:2]
    calibration = (pkg.get("calibration") or {}).get("method", "none")
    rows = [
        ("run", c["run"].name),
        ("architecture", model.get("name", "?")),
        ("pretrained weights", str((model.get("config") or {}).get("pretrained", "?"))),
        ("parameters", _num(summary.get("parameters"))),
        (
            "input",
            f"{inp.get('size', '?')} px square ({inp.get('mode', '?')}), {inp.get('channels', '?')} "
            f"channel(s), values in [{lo}, {hi}]",
        ),
        ("task and outputs", f"{pkg.get('task')}: {len(pkg.get('labels', []))} labels"),
        (
            "training",
            f"{train.get('loss', '?')} loss, {train.get('optimizer', '?')} lr {train.get('lr', '?')}, "
            f"{summary.get('epochs_run', '?')} epochs (best {summary.get('best_epoch', '?')} by val "
            f"{summary.get('monitor', '?')}), {_num(summary.get('train_seconds'), 0)} s",
        ),
        ("probability calibration", f"{calibration} (fitted on the validation split)"),
        ("created", f"{versions.get('created', '?')} with cxrkit {versions.get('cxrkit', '?')}"),
        ("exported engines", _engines(c["export"])),
        ("licence and status", "research software; not a medical device"),
    ]
    return CardSection("Model details", [Table(("field", "value"), rows)])


def _engines(export: dict | None) -> str:
    """What ``cxr export`` wrote and how far each engine is from PyTorch (its export.json)."""
    if not export:
        return "PyTorch only (`cxr export RUN` adds ONNX/OpenVINO after a parity check)"
    worst = max((p.get("max_abs_prob_diff", 0.0) for p in export.get("parity", [])), default=None)
    out = ["ONNX float32" + (f" (largest probability difference from PyTorch {worst:.1e})" if worst else "")]
    if export.get("openvino"):
        out.append("OpenVINO float32")
    for key, name in (("int8", "ONNX int8"), ("openvino_int8", "OpenVINO int8")):
        q = export.get(key)
        if q:
            kept = "" if q.get("kept", True) else ", NOT kept: over the allowed drop"
            change = q.get("macro_auc_change")
            change = f"{change:+.4f}" if isinstance(change, (int, float)) else "not measured"
            out.append(f"{name} (macro ROC-AUC change {change}{kept})")
    return "; ".join(out)


def _intended_use(c: dict) -> CardSection:
    synthetic = (c["package"].get("data") or {}).get("synthetic", False)
    return CardSection(
        "Intended use",
        [
            "**Primary uses**: research on chest X-ray classification (training, comparing and explaining "
            "CNNs on ChestX-ray14-style labels), and prototyping a triage worklist that puts likely "
            "abnormal frontal radiographs first for a radiologist, who reads every study.",
            "**Primary users**: ML researchers and students; radiology and informatics teams evaluating "
            "triage on their own labelled images (`cxr validate`) before any use.",
            "**Out of scope**: diagnosis or any clinical decision without a radiologist; lowering a "
            "study's priority; lateral views, CT, children, or any population not like the training data; "
            "sites where the model has not been validated locally; images the run flags as not "
            "assessable or out of distribution (they are never called normal: a reader sees them first)."
            + (
                " This run was trained on synthetic phantoms: it is for demonstration only."
                if synthetic
                else ""
            ),
        ],
    )


def _factors(c: dict) -> CardSection:
    ev = c["evaluation"]
    attrs = sorted({str(row.get("attribute")) for row in (ev or {}).get("subgroups") or []})
    text = (
        f"Evaluated per subgroup of {', '.join(attrs)} (see Quantitative analyses)."
        if attrs
        else "No subgroup attributes (sex, age, view) were available in the evaluation data."
    )
    return CardSection(
        "Factors",
        [
            "Relevant factors for chest X-ray models: patient sex and age, view position (PA/AP), the "
            "acquiring site and device, and image processing. " + text,
        ],
    )


def _metrics(c: dict) -> CardSection:
    ev, pkg = c["evaluation"], c["package"]
    if ev is None:
        return CardSection(
            "Metrics",
            [
                f"Not evaluated yet: run `cxr evaluate {c['run']} --split {c['split']}`, then `cxr card` "
                "again."
            ],
        )
    cfg = ev.get("config") or {}
    reps = (ev.get("macro_auc") or {}).get("replicates")  # stored with the interval itself
    tri = ev.get("triage") or {}
    op = pkg.get("operating_point") or {}
    blocks: list[str | Table] = [
        f"ROC-AUC per finding and macro/micro averages over {len(ev.get('averaged_labels') or [])} findings, "
        + (
            f"with 95% intervals from {reps} bootstrap replicates resampling patients "
            f"(seed {cfg.get('seed', '?')}); "
            if reps
            else "without intervals (evaluated with no bootstrap replicates); "
        )
        + "average precision; precision/recall/F1 at the "
        f"`{cfg.get('threshold', '?')}` thresholds tuned on {ev.get('thresholds_tuned_on', '?')}; "
        f"expected calibration error.",
    ]
    if op:
        blocks.append(
            f"**Triage operating point**: flag a study when its `{op.get('score')}` score says abnormal at "
            f"threshold {_num(op.get('threshold'), 4)}, chosen on {op.get('val_images', '?')} validation "
            f"images for a target sensitivity of {_num(op.get('target_sensitivity'), 2)} (validation "
            f"sensitivity {_num(op.get('val_sensitivity'))}, specificity {_num(op.get('val_specificity'))}"
            f"{'' if op.get('reached', True) else '; the target was NOT reached on validation'})."
        )
        seen = tri.get(c["split"]) or {}
        if seen:
            ci = tri.get("ci") or {}
            images, flagged = seen.get("images"), seen.get("flagged")
            unflagged = images - flagged if isinstance(images, int) and isinstance(flagged, int) else None
            blocks.append(
                f"On the {c['split']} split ({_num(images)} studies): sensitivity "
                f"{_ci(ci.get('sensitivity'))}, specificity {_ci(ci.get('specificity'))}; "
                f"{_num(unflagged)} studies not flagged "
                f"({_pct(seen.get('deferred_share'))}), of which {_num(seen.get('reads_saved'))} normal "
                f"(reads saved: {_pct(seen.get('reads_saved_share'))}) and {_num(seen.get('missed'))} "
                "abnormal (missed)."
            )
    return CardSection("Metrics", blocks)


def _data_counts(pkg: dict) -> Table:
    data = pkg.get("data") or {}
    rows = [
        (part, _num((data.get(part) or {}).get("images")), _num((data.get(part) or {}).get("patients")))
        for part in ("train", "val", "test")
        if data.get(part)
    ]
    return Table(("split", "images", "patients"), rows)


def _training_data(c: dict) -> CardSection:
    pkg, cfg = c["package"], c["config"]
    data, part = pkg.get("data") or {}, cfg.get("partition", {})
    method = part.get("method", "?")
    how = (
        f"split by patient ({part.get('train')}/{part.get('val')}/{part.get('test')}, seed "
        f"{part.get('seed')}): no patient is in two splits"
        if method == "patient"
        else f"split method `{method}`"
    )
    prevalence = data.get("prevalence") or {}
    blocks: list[str | Table] = [
        f"Source: `{data.get('source', '?')}`"
        + (" (synthetic phantoms, not X-rays)" if data.get("synthetic") else "")
        + f"; {how}.",
        _data_counts(pkg),
    ]
    if prevalence:
        blocks += [
            "Label prevalence in the training split:",
            Table(("label", "prevalence"), [(k, _pct(v)) for k, v in prevalence.items()]),
        ]
    return CardSection("Training data", blocks)


def _evaluation_data(c: dict) -> CardSection:
    ev = c["evaluation"]
    blocks: list[str | Table] = []
    if ev is not None:
        blocks.append(
            f"The run's held-out `{ev.get('split')}` split: {_num(ev.get('images'))} images of "
            f"{_num(ev.get('patients'))} patients, from the same source as the training data "
            "(in-distribution: it overstates performance at another site)."
        )
    if c["sites"]:
        blocks.append("Other sites (`cxr validate`):")
        blocks.append(
            Table(
                ("site", "images", "patients"),
                [(name, _num(s.get("images")), _num(s.get("patients"))) for name, s in c["sites"].items()],
            )
        )
    else:
        blocks.append(
            f"No other site yet: `cxr validate {c['run']} SITE_FOLDER` scores a labelled folder from "
            "another hospital, the figure that matters before use there."
        )
    return CardSection("Evaluation data", blocks)


def _analyses(c: dict) -> CardSection:
    ev = c["evaluation"]
    if ev is None:
        rest = _localization_blocks(c) + _site_blocks(c)
        return CardSection("Quantitative analyses", ["Not evaluated yet (see Metrics).", *rest])
    blocks: list[str | Table] = [
        Table(
            ("metric", "value [95% CI]"),
            [
                ("macro ROC-AUC", _ci(ev.get("macro_auc"))),
                ("micro ROC-AUC", _ci(ev.get("micro_auc"))),
                ("macro average precision", _ci(ev.get("macro_ap"))),
                ("normal vs abnormal ROC-AUC", _ci(ev.get("no_finding_auc"))),
            ],
        ),
        "Per finding:",
        Table(
            ("finding", "positives", "ROC-AUC [95% CI]", "AP", "threshold", "precision", "recall", "F1"),
            [
                (
                    r["label"],
                    _num(r.get("positives")),
                    value_ci(r.get("auc"), r.get("auc_low"), r.get("auc_high")),
                    _num(r.get("ap")),
                    _num(r.get("threshold")),
                    _num(r.get("precision")),
                    _num(r.get("recall")),
                    _num(r.get("f1")),
                )
                for r in ev.get("per_label") or []
            ],
        ),
        "Naive baselines on the same images (a model must beat these to have learned anything):",
        Table(
            ("model", "macro ROC-AUC", "micro ROC-AUC", "macro AP", "macro F1"),
            [
                (
                    "this model",
                    _num((ev.get("summary") or {}).get("macro_auc")),
                    _num((ev.get("summary") or {}).get("micro_auc")),
                    _num((ev.get("summary") or {}).get("macro_ap")),
                    _num(_rule_f1(ev)),
                )
            ]
            + [
                (
                    b["model"],
                    _num(b.get("macro_auc")),
                    _num(b.get("micro_auc")),
                    _num(b.get("macro_ap")),
                    _num(b.get("macro_f1")),
                )
                for b in ev.get("baselines") or []
            ],
        ),
    ]
    if ev.get("subgroups"):
        blocks += [
            "Subgroups:",
            Table(
                (
                    "attribute",
                    "group",
                    "images",
                    "patients",
                    "macro ROC-AUC",
                    "triage sensitivity",
                    "triage specificity",
                ),
                [
                    (
                        g["attribute"],
                        g["group"],
                        _num(g.get("images")),
                        _num(g.get("patients")),
                        _num(g.get("macro_auc")),
                        _num(g.get("triage_sensitivity")),
                        _num(g.get("triage_specificity")),
                    )
                    for g in ev["subgroups"]
                ],
            ),
        ]
    cal = ev.get("calibration") or {}
    if cal:
        blocks.append(
            f"Calibration: expected calibration error (pooled over findings) {_num(cal.get('ece_pooled'))} "
            f"after temperature scaling, {_num(cal.get('ece_pooled_before'))} before."
        )
    blocks += _localization_blocks(c) + _site_blocks(c)
    return CardSection("Quantitative analyses", blocks)


def _rule_f1(ev: dict) -> object:
    """The macro F1 at the thresholds the evaluation used (its threshold rule's row)."""
    rule = str((ev.get("config") or {}).get("threshold"))
    for row in ev.get("threshold_rules") or []:
        if str(row.get("rule")) == rule:
            return row.get("macro_f1")
    return None


def _localization_blocks(c: dict) -> list[str | Table]:
    loc = c["localization"]
    if loc is None:
        return [
            f"Explanation sanity: not measured yet (`cxr localize {c['run']}` scores Grad-CAM boxes "
            "against the NIH boxes and a centred-box baseline)."
        ]
    table, base = loc.get("table") or {}, loc.get("baseline_centred_box") or {}
    overall = table.get("all") or {}
    rows = [(k, _num(overall.get(k)), _num(base.get(k))) for k in overall]
    method = loc.get("method") or "?"
    return [
        f"Explanation sanity ({method} heatmaps, {_num(loc.get('boxes'))} boxes in "
        f"{_num(loc.get('images'))} images): localization accuracy of the heatmap's box against the "
        "radiologists' boxes, beside a box of the same size centred on the image (a heatmap that does "
        "not beat it explains nothing).",
        Table(("measure", method, "centred box"), rows),
    ]


def _site_blocks(c: dict) -> list[str | Table]:
    rows = []
    for name, s in c["sites"].items():
        for r in (s.get("site") or {}).get("comparison") or []:
            outside = {True: "yes", False: "no"}.get(r.get("outside_ci"), "–")
            metric, train, here = r.get("metric", "?"), r.get("training_site"), r.get("this_site")
            rows.append((name, metric, _num(train), _num(here), outside))
    if not rows:
        return []
    return [
        "Other sites against the training site:",
        Table(("site", "metric", "training site", "this site", "outside the site's CI"), rows),
    ]


def _caveats(c: dict) -> CardSection:
    items = [
        "NIH ChestX-ray14 labels were text-mined from radiology reports, so some are wrong; a model's "
        "agreement with them is bounded by that noise, and the noise differs by finding.",
        "In-distribution validation overstates real performance: measure on the site's own labelled "
        "images (`cxr validate`) and recalibrate there before trusting a threshold.",
        "Images that are blank, malformed, not a frontal radiograph or out of distribution are flagged "
        "and put in front of a reader, never called normal.",
        "Grad-CAM heatmaps are coarse; they show where the network looked, not why, and can be wrong.",
    ]
    items = [f"**{w[0].upper() + w[1:]}**." for w in c["warnings"]] + items  # the viewer's banners too
    return CardSection(
        "Ethical considerations, caveats and recommendations",
        ["- " + "\n- ".join(items)],
    )


def _reproduce(c: dict) -> CardSection:
    run, ev = c["run"], c["evaluation"]
    cfg = (ev or {}).get("config") or {}
    lines = [
        f"The resolved configuration is `{run / files.CONFIG}`; weights digest (SHA-256) "
        f"`{(ev or {}).get('weights_sha256', '(see cxr evaluate)')}`.",
        f"- `cxr train --config {run / files.CONFIG} --out OUT --name {run.name}`\n"
        f"- `cxr evaluate OUT/{run.name} --split {c['split']}{_eval_flags(cfg)}`\n"
        f"- `cxr card OUT/{run.name}" + (f" --split {c['split']}" if c["split"] != "test" else "") + "`",
    ]
    return CardSection("How to reproduce", lines)


def _eval_flags(cfg: dict) -> str:
    """The ``cxr evaluate`` flags that reproduce an evaluation's stored config (the ones it sets)."""
    flags = {
        "--threshold": cfg.get("threshold"),
        "--beta": cfg.get("beta"),
        "--bootstrap": cfg.get("n_boot"),
        "--seed": cfg.get("seed"),
        "--target-sensitivity": cfg.get("target_sensitivity"),
        "--score-method": cfg.get("score_method"),
    }
    return "".join(
        f" {k} {v:g}" if isinstance(v, float) else f" {k} {v}" for k, v in flags.items() if v is not None
    )


def build_card(run_dir: str | Path, split: str = "test") -> tuple[str, list[CardSection]]:
    """The card's title and sections for a run (read-only)."""
    c = load_card_inputs(run_dir, split)
    title = f"Model card: {c['run'].name}"
    sections = [
        _details(c),
        _intended_use(c),
        _factors(c),
        _metrics(c),
        _evaluation_data(c),
        _training_data(c),
        _analyses(c),
        _caveats(c),
        _reproduce(c),
    ]
    return title, sections


def write_card(
    run_dir: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Write model_card.md and model_card.html (into the run folder unless ``out``); their paths."""
    title, sections = build_card(run_dir, split)
    folder = Path(out) if out else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    md = write_text(folder / CARD_MD, card_markdown(title, sections))
    page = write_text(
        folder / CARD_HTML,
        card_html(title, sections, "Mitchell et al. 2019 layout; every figure read from the run's files"),
    )
    log(f"model card: {md} and {page}")
    return md, page
