"""evaluate_run end to end on a trained phantom run: honest thresholds, baselines beaten, files written."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluate.bootstrap import ranking_cis
from cxrkit.evaluate.thresholds import choose_thresholds
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, operating_point, triage_counts
from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel, predict_split


def test_outputs_and_baselines_beaten(phantom_eval):
    for f in (
        "evaluation.json",
        "report.html",
        "per_label.csv",
        "worklist.csv",
        "triage_sweep.csv",
        "predictions.csv",
    ):
        assert (phantom_eval / f).is_file(), f
    m = json.loads((phantom_eval / "evaluation.json").read_text())
    split = pd.read_csv(phantom_eval.parent / "split.csv")
    assert (
        m["split"] == "test" and len(m["per_label"]) == 15 and m["images"] == (split["split"] == "test").sum()
    )
    assert {b["model"] for b in m["baselines"]} == {"majority", "prevalence", "always_abnormal"}
    base = {b["model"]: b for b in m["baselines"]}
    # constant scores rank nothing: exactly 0.5; random draws at the training prevalence: near 0.5
    assert base["majority"]["macro_auc"] == base["always_abnormal"]["macro_auc"] == 0.5
    assert abs(base["prevalence"]["macro_auc"] - 0.5) < 0.06
    assert (
        base["always_abnormal"]["triage_sensitivity"] == 1
        and base["always_abnormal"]["reads_saved_share"] == 0
    )
    # observed (CPU, seed 0): macro ROC-AUC 0.901 [0.887, 0.916]; the whole interval clears the baselines
    assert m["macro_auc"]["low"] >= 0.86, m["macro_auc"]
    # the 95% operating point chosen on val holds on held-out patients (observed 97.6%, 31% reads saved)
    assert m["triage"]["test"]["sensitivity"] >= 0.93 and m["triage"]["test"]["reads_saved_share"] >= 0.2
    assert m["macro_auc"]["low"] <= m["macro_auc"]["value"] <= m["macro_auc"]["high"]
    assert {s["attribute"] for s in m["subgroups"]} == {"sex", "age band", "view"}


def test_thresholds_from_val_are_applied_unchanged_to_test(phantom_run, phantom_eval):
    m = json.loads((phantom_eval / "evaluation.json").read_text())
    run = RunModel.load(phantom_run, "cpu")
    data = load_run_data(run.path)
    val, test = predict_split(run, data, "val"), predict_split(run, data, "test")
    assert np.allclose(
        [r["threshold"] for r in m["per_label"]], choose_thresholds(val.targets, val.probs, "max_f1")
    )
    s_val, _ = abnormality_score(val.probs, run.labels)
    t = operating_point(abnormal_truth(val.targets, run.labels), s_val, 0.95)
    assert np.isclose(m["triage"]["threshold"], t)
    assert m["triage"]["val"]["sensitivity"] >= 0.95
    s_test, _ = abnormality_score(test.probs, run.labels)
    c = triage_counts(abnormal_truth(test.targets, run.labels), s_test, t)
    assert np.isclose(m["triage"]["test"]["sensitivity"], c["sensitivity"])
    html = (phantom_eval / "report.html").read_text()
    assert f"Applied unchanged to <b>test</b>: sensitivity <b>{100 * c['sensitivity']:.1f}%</b>" in html


def test_report_intervals_resample_patients_not_images(phantom_run, phantom_eval):
    """Phantom patients have two images each: the report's CIs are a patient bootstrap, recomputed here."""
    m = json.loads((phantom_eval / "evaluation.json").read_text())
    run = RunModel.load(phantom_run, "cpu")
    test = predict_split(run, load_run_data(run.path), "test")
    split = pd.read_csv(phantom_run / "split.csv", dtype=str).set_index("image_id")
    patients = split.loc[test.meta["image_id"].astype(str), "patient_id"].to_numpy()
    assert len(set(patients)) < len(patients)  # several images per patient: the two bootstraps differ
    cols = [run.labels.index(lab) for lab in m["averaged_labels"]]
    n_boot, seed = m["config"]["n_boot"], m["config"]["seed"]
    by_patient = ranking_cis(test.targets, test.probs, patients, n_boot, seed, average=cols)
    by_image = ranking_cis(test.targets, test.probs, np.arange(len(patients)), n_boot, seed, average=cols)
    for key, ci in (("macro_auc", by_patient.macro_auc), ("micro_auc", by_patient.micro_auc)):
        assert (m[key]["low"], m[key]["high"]) == pytest.approx((ci.low, ci.high), abs=1e-12), key
    assert (m["macro_auc"]["low"], m["macro_auc"]["high"]) != pytest.approx(
        (by_image.macro_auc.low, by_image.macro_auc.high), abs=1e-6
    )
    lows = [r["auc_low"] for r in m["per_label"]]
    assert lows == pytest.approx([c.low for c in by_patient.auc], abs=1e-12)


def test_worklist_and_predictions(phantom_eval):
    w = pd.read_csv(phantom_eval / "worklist.csv")
    assert w["score"].is_monotonic_decreasing and list(w["rank"]) == list(range(1, len(w) + 1))
    assert set(w["flag"]) <= {"abnormal", "normal", "out of distribution"}
    assert w["top_findings"].str.contains(r"\d\.\d\d").all()
    m = json.loads((phantom_eval / "evaluation.json").read_text())
    assert m["ood"]["flagged"] == (w["flag"] == "out of distribution").sum() <= 0.05 * len(w)
    p = pd.read_csv(phantom_eval / "predictions.csv")
    assert len(p) == len(w) and "prob:Effusion" in p and "true:Effusion" in p


def test_every_json_a_run_holds_is_strict_json(phantom_eval):
    """No bare NaN/Infinity anywhere (other tools' JSON parsers reject them); null says why instead."""
    from cxrkit.run import files

    found = sorted(phantom_eval.parent.rglob("*.json"))  # the run folder: model.json, summary.json, eval-*/
    assert {files.PACKAGE, files.SUMMARY, files.EVALUATION} <= {p.name for p in found}
    for path in found:
        text = path.read_text()
        doc = json.loads(text, parse_constant=lambda c, p=path: pytest.fail(f"bare {c} in {p}"))
        if path.name == files.EVALUATION and ": null" in text:
            assert doc["nulls"].startswith("null: a value that cannot be computed"), path
