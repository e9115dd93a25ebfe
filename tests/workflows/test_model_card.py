"""``cxr card``: a model card whose every figure comes from the run's files, in Mitchell et al.'s layout."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from cxrkit.cli import main
from cxrkit.workflows.model_card import CARD_HTML, CARD_MD, write_card

SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations, caveats and recommendations",
    "How to reproduce",
)


@pytest.fixture
def card_run(phantom_run, phantom_eval, tmp_path) -> Path:
    """A copy of the evaluated phantom run's small files (no weights: the card never loads them)."""
    run = tmp_path / "phantom"
    run.mkdir()
    for name in ("model.json", "config.yaml", "summary.json", "split.csv"):
        shutil.copy(phantom_run / name, run / name)
    shutil.copytree(phantom_eval, run / "eval-test")
    return run


def _ci(block: dict) -> str:
    return f"{block['value']:.3f} [{block['low']:.3f}, {block['high']:.3f}]"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.h2, self.tables, self.text = [], 0, []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs) -> None:
        self._in_h2 = tag == "h2"
        self.tables += tag == "table"

    def handle_data(self, data) -> None:
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def test_card_figures_are_the_runs_own(card_run):
    md_path, html_path = write_card(card_run, log=lambda m: None)
    md = md_path.read_text()
    ev = json.loads((card_run / "eval-test" / "evaluation.json").read_text())
    for key in ("macro_auc", "micro_auc", "macro_ap"):
        assert _ci(ev[key]) in md, key
    for row in ev["per_label"]:
        line = next(x for x in md.splitlines() if x.startswith(f"| {row['label']} | {row['positives']} |"))
        assert f"{row['auc']:.3f} [{row['auc_low']:.3f}, {row['auc_high']:.3f}]" in line, line
    test = ev["triage"]["test"]  # not flagged = images - flagged, split into normal (saved) and missed
    assert (
        f"{test['images'] - test['flagged']} studies not flagged ({100 * test['deferred_share']:.1f}%), of "
        f"which {test['reads_saved']} normal (reads saved: {100 * test['reads_saved_share']:.1f}%) and "
        f"{test['missed']} abnormal (missed)"
    ) in md
    majority = next(b for b in ev["baselines"] if b["model"] == "majority")
    assert f"| majority | {majority['macro_auc']:.3f} |" in md
    assert _ci(ev["triage"]["ci"]["sensitivity"]) in md
    # training counts, recomputed from split.csv (an independent source)
    split = pd.read_csv(card_run / "split.csv")
    train = split[split["split"] == "train"]
    assert f"| train | {len(train):,} | {train['patient_id'].nunique():,} |" in md
    assert "synthetic phantoms" in md and "not a medical device" in md
    # the HTML holds the same sections and as many tables as the Markdown
    parser = _Text()
    parser.feed(html_path.read_text())
    assert parser.h2 == list(SECTIONS)
    assert [line for line in md.splitlines() if line.startswith("## ")] == [f"## {s}" for s in SECTIONS]
    assert parser.tables == sum(1 for line in md.splitlines() if line.startswith("|---"))
    assert _ci(ev["macro_auc"]) in "".join(parser.text)


def test_a_changed_file_changes_the_card(card_run):
    """Nothing is typed: edit the evaluation's figure and the card follows it."""
    path = card_run / "eval-test" / "evaluation.json"
    ev = json.loads(path.read_text())
    ev["macro_auc"] = {"value": 0.123456, "low": 0.1, "high": 0.2, "replicates": 9}
    path.write_text(json.dumps(ev))
    md = write_card(card_run, log=lambda m: None)[0].read_text()
    assert "| macro ROC-AUC | 0.123 [0.100, 0.200] |" in md


def test_parts_not_computed_say_which_command_computes_them(card_run):
    shutil.rmtree(card_run / "eval-test")
    md = write_card(card_run, log=lambda m: None)[0].read_text()
    assert f"Not evaluated yet: run `cxr evaluate {card_run} --split test`" in md
    assert f"`cxr localize {card_run}`" in md and f"`cxr validate {card_run} SITE_FOLDER`" in md
    assert "None" not in md and "nan" not in md.lower()


def test_localization_export_and_site_results_appear(card_run):
    loc = {
        "method": "gradcam++",
        "boxes": 40,
        "images": 30,
        "table": {"all": {"T(IoBB)=0.5": 0.61, "mean IoU": 0.22}},
        "baseline_centred_box": {"T(IoBB)=0.5": 0.18, "mean IoU": 0.07},
    }
    (card_run / "localization.json").write_text(json.dumps(loc))
    export = {"parity": [{"max_abs_prob_diff": 2.5e-6}], "int8": {"macro_auc_change": -0.0031, "kept": True}}
    (card_run / "export.json").write_text(json.dumps(export))
    site = card_run / "validate-hospital-b"
    site.mkdir()
    comparison = [{"metric": "macro ROC-AUC", "training_site": 0.9, "this_site": 0.71, "outside_ci": True}]
    (site / "evaluation.json").write_text(
        json.dumps({"images": 120, "patients": 80, "site": {"comparison": comparison}})
    )
    md = write_card(card_run, log=lambda m: None)[0].read_text()
    assert "| T(IoBB)=0.5 | 0.610 | 0.180 |" in md and "40 boxes in 30 images" in md
    assert "| measure | gradcam++ | centred box |" in md  # the method the boxes came from
    assert "largest probability difference from PyTorch 2.5e-06" in md
    assert "ONNX int8 (macro ROC-AUC change -0.0031)" in md
    assert "| hospital-b | 120 | 80 |" in md
    assert "| hospital-b | macro ROC-AUC | 0.900 | 0.710 | yes |" in md


def test_cli_card(card_run, tmp_path, capsys):
    out = tmp_path / "cards"
    assert main(["card", str(card_run), "--out", str(out)]) == 0
    assert (out / CARD_MD).is_file() and (out / CARD_HTML).is_file()
    assert main(["card", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_nulls_and_empty_files_do_not_break_the_card(card_run):
    """NaN is stored as null; a hand-edited or half-written file must not crash the card."""
    path = card_run / "eval-test" / "evaluation.json"
    ev = json.loads(path.read_text())
    ev.update(config=None, subgroups=None, baselines=None, triage=None)
    path.write_text(json.dumps(ev))
    (card_run / "config.yaml").write_text("")
    (card_run / "export.json").write_text(json.dumps({"int8": {"macro_auc_change": None, "kept": False}}))
    (card_run / "localization.json").write_text("{}")
    md = write_card(card_run, log=lambda m: None)[0].read_text()
    assert "ONNX int8 (macro ROC-AUC change not measured, NOT kept" in md
    assert f"from {ev['macro_auc']['replicates']} bootstrap replicates" in md and "None" not in md
    ev["macro_auc"]["replicates"] = 0  # an evaluation run with --bootstrap 0
    path.write_text(json.dumps(ev))
    assert "without intervals" in write_card(card_run, log=lambda m: None)[0].read_text()
