"""feedback_figures: model vs readers per label and per triage flag, against independent counts."""

import math

import numpy as np
import pytest
from feedback_helpers import MODEL, service_answer, study_id
from sklearn.metrics import cohen_kappa_score

from cxrkit.workflows.feedback import FeedbackStore
from cxrkit.workflows.feedback_report import feedback_figures, write_feedback_report


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out from its textbook formula."""
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


@pytest.fixture
def store(tmp_path) -> tuple[FeedbackStore, dict]:
    """40 studies, two readers on some; what each reader marked and said, kept aside for the checks."""
    rng = np.random.default_rng(0)
    s = FeedbackStore(tmp_path / "feedback.db")
    truth = {"pairs": [], "verdicts": []}
    for k in range(40):
        probs = {"Effusion": float(rng.random()), "Nodule": float(rng.random()), "No Finding": 0.5}
        thresholds = {"Effusion": 0.4, "Nodule": 0.6, "No Finding": 0.5}
        flag = ("abnormal", "normal", "out of distribution")[k % 3]
        s.record_prediction(study_id(k), MODEL, service_answer(probs, flag, thresholds))
        for reader in ("a", "b") if k % 4 == 0 else ("a",):
            mark = "present" if rng.random() < 0.5 else "absent"
            triage = "agree" if rng.random() < 0.7 else "disagree"
            if reader == "a" and k % 5 == 0:  # a first said the opposite, then changed their mind
                other = "absent" if mark == "present" else "present"
                s.add_feedback(
                    study_id(k),
                    "disagree" if triage == "agree" else "agree",
                    {"Effusion": other},
                    reader=reader,
                )
            findings = {"Effusion": mark, "Nodule": "unsure"}
            s.add_feedback(study_id(k), triage, findings, "Mr X", reader=reader)
            model_call = int(probs["Effusion"] >= 0.4)
            truth["pairs"].append((model_call, int(mark == "present"), k))
            truth["verdicts"].append((flag, triage))
    return s, truth


def test_per_label_agreement_equals_independent_counts(store):
    s, truth = store
    f = feedback_figures(s, n_boot=200)
    (eff,) = f["labels"]  # Nodule: only "unsure" marks, left out; No Finding: never marked
    model = np.array([p[0] for p in truth["pairs"]])
    reader = np.array([p[1] for p in truth["pairs"]])
    assert eff["label"] == "Effusion" and eff["n"] == len(truth["pairs"])
    assert eff["kappa"] == pytest.approx(cohen_kappa_score(model, reader))
    assert eff["agreement"] == pytest.approx((model == reader).mean())
    assert eff["both_present"] == int(((model == 1) & (reader == 1)).sum())
    assert eff["kappa_low"] <= eff["kappa"] <= eff["kappa_high"]


def test_triage_shares_equal_hand_counts_with_wilson_intervals(store):
    s, truth = store
    rows = {r["calls"]: r for r in feedback_figures(s, n_boot=0)["triage"]}
    for calls, flags in (
        ("every verdict", {"abnormal", "normal", "out of distribution"}),
        ("flagged abnormal (flag precision)", {"abnormal"}),
        ("called normal", {"normal"}),
        ("flagged out of distribution", {"out of distribution"}),
    ):
        mine = [t for f, t in truth["verdicts"] if f in flags]
        agree = mine.count("agree")
        assert rows[calls]["n"] == len(mine) and rows[calls]["agree"] == agree, calls
        assert rows[calls]["value"] == pytest.approx(agree / len(mine))
        assert (rows[calls]["low"], rows[calls]["high"]) == pytest.approx(wilson(agree, len(mine)))


def test_counts_readers_span_and_models(store):
    s, truth = store
    s.record_prediction(
        study_id(0),
        {**MODEL, "digest": "ef" * 32, "version": "0.2.0"},
        service_answer({"Effusion": 0.9, "Nodule": 0.1, "No Finding": 0.1}, "abnormal"),
    )
    s.add_feedback(study_id(0), "agree", {}, reader="c")
    f = feedback_figures(s, n_boot=0)
    assert f["readers"] == 3 and not f["unnamed"]
    assert f["latest_rows"] == len(truth["verdicts"]) + 1
    assert (
        f["feedback_rows"] == len(truth["verdicts"]) + 8 + 1
    )  # 8 superseded rows (k % 20 == 0 is 2 readers)
    assert [m["version"] for m in f["models"]] == ["0.1.0", "0.2.0"] and f["models"][1]["rows"] == 1
    assert f["first"] <= f["last"]


def test_a_verdict_is_paired_with_the_prediction_the_reader_saw(tmp_path):
    """The study is scored again by a newer model after the verdict: the verdict stays on the old flag."""
    s = FeedbackStore(tmp_path / "f.db")
    probs = {"Effusion": 0.9, "No Finding": 0.1}
    s.record_prediction(study_id(1), MODEL, service_answer(probs, "abnormal"))
    s.add_feedback(study_id(1), "agree", {"Effusion": "present"}, reader="a")
    s.record_prediction(
        study_id(1),
        {**MODEL, "digest": "ef" * 32},
        service_answer({"Effusion": 0.1, "No Finding": 0.9}, "normal"),
    )
    f = feedback_figures(s, n_boot=0)
    rows = {r["calls"]: r for r in f["triage"]}
    assert rows["flagged abnormal (flag precision)"]["n"] == 1 and rows["called normal"]["n"] == 0
    assert f["labels"][0]["both_present"] == 1


def test_write_feedback_report_writes_the_page(store, tmp_path):
    s, _ = store
    f = write_feedback_report(s, tmp_path / "r" / "feedback.html", n_boot=50)
    page = (tmp_path / "r" / "feedback.html").read_text()
    assert f["n_boot"] == 50 and "Cohen" in page and "Mr X" not in page
