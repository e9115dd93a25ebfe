"""export_labels: the readers' verdicts as a table cxr train reads, rule by rule, on a hand-built store."""

import numpy as np
import pandas as pd
import pytest
from feedback_helpers import MODEL, PATIENT, service_answer, study_id

from cxrkit.data.table import TableDataset
from cxrkit.workflows.feedback import FeedbackStore
from cxrkit.workflows.feedback_export import (
    NO_LABEL,
    NOT_KEPT,
    export_labels,
    reader_labels,
    reader_verdict,
)

PROBS = {"Effusion": 0.6, "Nodule": 0.2, "No Finding": 0.3}
E, N, NF = "Effusion", "Nodule", "No Finding"

# study -> (flag, kept, [(reader, triage, findings)], expected Effusion, Nodule, No Finding; None: empty)
CASES = {
    "agree-abnormal": ("abnormal", True, [("a", "agree", {E: "present"})], (1, None, 0)),
    "disagree-abnormal": ("abnormal", True, [("a", "disagree", {})], (0, 0, 1)),
    "agree-normal-unsure": ("normal", True, [("a", "agree", {N: "unsure"})], (0, None, 1)),
    "disagree-normal": ("normal", True, [("a", "disagree", {N: "absent"})], (None, 0, 0)),
    "conflict": ("normal", True, [("a", "agree", {E: "present"})], (1, None, None)),
    "ood-agree": ("out of distribution", True, [("a", "agree", {E: "absent"})], (0, None, None)),
    "findings-only": ("normal", True, [("a", None, {N: "present"})], (None, 1, 0)),
    "readers-disagree": (
        "abnormal",
        True,
        [("a", "agree", {E: "present"}), ("b", "agree", {E: "absent", N: "absent"})],
        (None, 0, 0),
    ),
    "changed-mind": (
        "abnormal",
        True,
        [("a", "agree", {E: "present"}), ("b", "agree", {E: "present"}), ("a", "disagree", {})],
        (None, 0, None),  # a now says normal (Effusion 0, Nodule 0, NF 1), b abnormal (Effusion 1, NF 0)
    ),
    "comment-only": ("abnormal", True, [("a", None, {})], None),
    "ood-agree-only": ("out of distribution", True, [("a", "agree", {})], None),
    "not-kept": ("abnormal", False, [("a", "agree", {E: "present"})], None),
    "kept-then-deleted": ("abnormal", "deleted", [("a", "agree", {E: "present"})], None),
}


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    s = FeedbackStore(tmp_path / "feedback.db")
    kept = tmp_path / "out" / "kept"
    kept.mkdir(parents=True)
    for name, (flag, keep, readers, _expected) in CASES.items():
        image = kept / f"{study_id(name)}.png"
        if keep:
            image.write_bytes(b"png")
        s.record_prediction(study_id(name), MODEL, service_answer(PROBS, flag), str(image) if keep else None)
        for reader, triage, findings in readers:
            s.add_feedback(study_id(name), triage, findings, f"patient {PATIENT} called", reader=reader)
        if keep == "deleted":
            image.unlink()
    return s


def test_every_rule_gives_the_expected_labels(store, tmp_path):
    out = tmp_path / "out" / "labels.csv"
    summary = export_labels(store, out)
    table = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("patient_id")
    written = {n: c for n, c in CASES.items() if c[3] is not None}
    assert sorted(table.index) == sorted(study_id(n) for n in written)
    for name, (*_rest, expected) in written.items():
        row = table.loc[study_id(name)]
        got = tuple(None if row[lab] == "" else int(row[lab]) for lab in (E, N, NF))
        assert got == expected, name
    assert list(table.columns) == ["path", E, N, NF]
    assert summary.rows == len(written) and summary.studies == len(CASES)
    assert summary.skipped == {NOT_KEPT: 2, NO_LABEL: 2} and (summary.not_kept, summary.no_labels) == (2, 2)
    assert summary.conflicts == 1  # a finding present on a study the reader called normal
    assert summary.disagreements == 1 + 2  # readers-disagree: Effusion; changed-mind: Effusion, No Finding
    assert summary.readers == 2 and summary.labels == (E, N, NF)
    text = "\n".join(summary.lines())
    assert f"skipped 2 of {len(CASES)} studies: {NOT_KEPT}" in text and "--keep-images DIR" in text


def test_the_table_holds_no_names_or_comments_and_cxr_train_reads_it(store, tmp_path):
    out = tmp_path / "out" / "labels.csv"
    export_labels(store, out)
    text = out.read_text()
    assert PATIENT not in text and "called" not in text and ",a," not in text
    ds = TableDataset(out)
    assert ds.labels == (E, N, NF)
    assert all(p.startswith("kept/") for p in pd.read_csv(out)["path"])  # relative to the CSV's folder
    assert all((out.parent / p).is_file() for p in pd.read_csv(out)["path"])
    assert (ds.meta["patient_id"] == pd.read_csv(out)["patient_id"]).all()
    row = ds.meta.index[ds.meta["patient_id"] == study_id("agree-abnormal")][0]
    np.testing.assert_array_equal(ds.targets()[row], [1.0, np.nan, 0.0])


def test_images_outside_the_csv_folder_get_absolute_paths(store, tmp_path):
    out = tmp_path / "elsewhere" / "labels.csv"
    export_labels(store, out)
    paths = pd.read_csv(out)["path"]
    assert all(p.startswith(str(tmp_path / "out" / "kept")) for p in paths)


def test_an_empty_store_exports_a_header_only(tmp_path):
    summary = export_labels(FeedbackStore(tmp_path / "f.db"), tmp_path / "labels.csv")
    assert summary.rows == 0 and (tmp_path / "labels.csv").read_text().strip() == "path,patient_id"


@pytest.mark.parametrize(
    ("triage", "flag", "verdict"),
    [
        ("agree", "abnormal", "abnormal"),
        ("disagree", "normal", "abnormal"),
        ("agree", "normal", "normal"),
        ("disagree", "abnormal", "normal"),
        ("agree", "out of distribution", None),
        ("disagree", "out of distribution", None),
        (None, "abnormal", None),
    ],
)
def test_reader_verdict(triage, flag, verdict):
    assert reader_verdict(triage, flag) == verdict


def test_reader_labels_with_no_finding_marked_by_hand():
    labels = [E, N, NF]
    assert reader_labels({NF: "present"}, None, labels) == ({E: 0.0, N: 0.0, NF: 1.0}, False)
    assert reader_labels({NF: "absent"}, None, labels) == ({E: None, N: None, NF: 0.0}, False)
    assert reader_labels({NF: "present"}, "abnormal", labels) == ({E: None, N: None, NF: None}, True)
    # a model without No Finding: the normal verdict still makes unmarked findings absent
    assert reader_labels({}, "normal", [E, N]) == ({E: 0.0, N: 0.0}, False)


def test_holdout_is_drawn_by_patient_and_a_rescore_keeps_the_kept_image(tmp_path):
    """``--holdout``: whole patients go to the held-out table (a patient's films never straddle it);
    a later answer for the same study without a kept image does not erase the one kept before."""
    store = FeedbackStore(tmp_path / "fb.sqlite")
    for k in range(40):
        image = tmp_path / f"{k}.png"
        image.write_bytes(b"png")
        study = study_id(k)
        store.record_prediction(study, MODEL, service_answer(PROBS, "abnormal"), str(image), f"MRN-{k // 2}")
        store.record_prediction(study, MODEL, service_answer(PROBS, "abnormal"))  # again, nothing kept
        store.add_feedback(study, "agree", {E: "present"})
    summary = export_labels(store, tmp_path / "labels.csv", holdout=0.3)
    train = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    held = pd.read_csv(summary.holdout, dtype=str)
    assert len(train) + len(held) == 40 and summary.rows == len(train) and summary.holdout_rows == len(held)
    assert len(set(held["patient_id"])) == 6 and not set(held["patient_id"]) & set(train["patient_id"])
    assert train.groupby("patient_id").size().eq(2).all()  # two films per patient, kept together
    assert not (set(train["patient_id"]) & {study_id(k) for k in range(40)})  # the patient key, not the study
    assert "MRN" not in (tmp_path / "labels.csv").read_text() + summary.holdout.read_text()
