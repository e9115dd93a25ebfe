"""FeedbackStore: what it keeps (and never keeps), the latest-row rule, hostile input, threads."""

import re
import sqlite3
import threading
from pathlib import Path

import pytest
from feedback_helpers import LABELS, MODEL, PATIENT, service_answer, study_id

from cxrkit.workflows.feedback import MAX_COMMENT, FeedbackStore, UnknownStudyError, latest_feedback

PROBS = {"Effusion": 0.8, "Nodule": 0.1, "No Finding": 0.2}


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    s = FeedbackStore(tmp_path / "fb" / "feedback.db")
    s.record_prediction(study_id(1), MODEL, service_answer(PROBS, "abnormal"), str(tmp_path / "kept.png"))
    return s


def test_a_prediction_and_feedback_round_trip(store, tmp_path):
    row = store.add_feedback(study_id(1), "agree", {"Effusion": "present"}, "looks right", reader="dr-a")
    assert row["study"] == study_id(1) and row["reader"] == "dr-a" and row["triage"] == "agree"
    assert row["findings"] == {"Effusion": "present"} and row["comment"] == "looks right"
    assert (row["model_digest"], row["model_version"]) == (MODEL["digest"], MODEL["version"])
    assert row["time"].endswith("+00:00")  # UTC
    assert store.feedback() == [row]
    (pred,) = store.predictions()
    assert pred["study"] == study_id(1) and pred["model"] == MODEL
    assert pred["probabilities"] == PROBS and list(pred["probabilities"]) == list(LABELS)
    assert pred["thresholds"] == dict.fromkeys(LABELS, 0.5)
    assert (pred["flag"], pred["score"], pred["threshold"]) == ("abnormal", 0.7, 0.5)
    assert pred["image"] == str(tmp_path / "kept.png")
    assert FeedbackStore(store.path).feedback() == [row]  # reopened: the same rows


def test_recording_the_same_study_and_model_again_replaces_the_answer_but_keeps_the_image(store, tmp_path):
    store.record_prediction(study_id(1), MODEL, service_answer({**PROBS, "Effusion": 0.3}, "normal"))
    store.record_prediction(study_id(1), {**MODEL, "digest": "cd" * 32}, service_answer(PROBS, "abnormal"))
    preds = store.predictions()
    assert len(preds) == 2
    mine = next(p for p in preds if p["model"]["digest"] == MODEL["digest"])
    assert mine["probabilities"]["Effusion"] == 0.3 and mine["flag"] == "normal"
    assert mine["image"] == str(tmp_path / "kept.png")  # kept before; a later answer without it keeps it


def test_no_file_name_patient_name_or_header_is_stored(tmp_path):
    """The answer carries a file name and a header naming the patient: none of it reaches the file."""
    s = FeedbackStore(tmp_path / "feedback.db")
    s.record_prediction(study_id(2), MODEL, service_answer(PROBS, "abnormal"), None)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("feedback.db*"))  # the WAL too
    assert PATIENT.encode() not in raw and b".dcm" not in raw and b"header" not in raw
    assert study_id(2).encode() in raw


def test_several_rows_per_study_and_the_latest_per_reader(store):
    first = store.add_feedback(study_id(1), "agree", {"Effusion": "present"}, reader="dr-a")
    other = store.add_feedback(study_id(1), "disagree", {}, reader="dr-b")
    changed = store.add_feedback(study_id(1), None, {"Effusion": "absent"}, reader="dr-a")
    unnamed = [store.add_feedback(study_id(1), "agree", {}), store.add_feedback(study_id(1), None, {}, "x")]
    rows = store.feedback()
    assert [r["id"] for r in rows] == [
        unnamed[1]["id"],
        unnamed[0]["id"],
        changed["id"],
        other["id"],
        first["id"],
    ]
    assert store.feedback(limit=2) == rows[:2] and store.feedback(limit=0) == []
    latest = latest_feedback(rows)
    assert [r["id"] for r in latest] == [unnamed[1]["id"], changed["id"], other["id"]]
    assert store.add_feedback(study_id(1), "agree", {}, reader="   ")["reader"] is None  # blank: unnamed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"findings": {"Pneumothorax": "present"}},
            "'Pneumothorax': not a label of the model; expected one of Effusion, Nodule, No Finding",
        ),
        (
            {"findings": {"Effusion": "yes"}},
            "finding Effusion: 'yes'; expected one of present, absent, unsure",
        ),
        ({"findings": ["Effusion"]}, "findings: expected a mapping"),
        ({"triage": "maybe"}, "triage 'maybe': expected agree, disagree or none"),
        ({"comment": "x" * (MAX_COMMENT + 1)}, f"at most {MAX_COMMENT} characters"),
        ({"reader": "r" * 1000}, "reader: expected a name"),
        ({"triage": None, "findings": {}, "comment": "  "}, "empty feedback"),
    ],
)
def test_hostile_feedback_is_refused_with_a_clear_message(store, kwargs, message):
    args = {"triage": "agree", "findings": {}, "comment": "", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        store.add_feedback(study_id(1), **args)
    assert "\n" not in str(err.value)
    assert store.feedback() == []


def test_feedback_on_a_study_without_a_prediction_or_not_a_hash_is_refused(store):
    with pytest.raises(UnknownStudyError, match=f"no prediction recorded for study {study_id(9)[:12]}: "):
        store.add_feedback(study_id(9), "agree", {})
    for bad in ("../../etc/passwd", f"{PATIENT}.dcm", study_id(1)[:-1], 12345, None):
        with pytest.raises(ValueError, match="expected the sha256 of the image"):
            store.add_feedback(bad, "agree", {})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="expected the sha256 of the image"):
            store.record_prediction(bad, MODEL, service_answer(PROBS, "normal"))  # type: ignore[arg-type]
    assert store.add_feedback(study_id(1).upper(), "agree", {})["study"] == study_id(1)


def test_an_answer_that_is_not_one_is_refused(store):
    with pytest.raises(ValueError, match="not a /v1/predict answer"):
        store.record_prediction(study_id(3), MODEL, {"probabilities": PROBS})
    with pytest.raises(ValueError, match="probability of Effusion 'high': expected a number"):
        bad = service_answer(PROBS, "normal")
        store.record_prediction(study_id(3), MODEL, {**bad, "probabilities": {**PROBS, "Effusion": "high"}})


def test_a_file_that_is_not_a_feedback_database_is_refused_by_name(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("not a database, just text " * 100)
    with pytest.raises(ValueError, match=f"{text}: not a feedback database"):
        FeedbackStore(text)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE patients (name TEXT)")
    con.close()
    with pytest.raises(ValueError, match=f"{other}: a SQLite database, but not a cxrkit feedback store"):
        FeedbackStore(other)
    with pytest.raises(ValueError, match="is a folder"):
        FeedbackStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such feedback database"):
        FeedbackStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_a_newer_store_is_refused(tmp_path):
    s = FeedbackStore(tmp_path / "f.db")
    with sqlite3.connect(s.path) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    con.close()
    with pytest.raises(ValueError, match="version 99 is newer"):
        FeedbackStore(s.path)


def test_threads_write_at_once(store):
    """The service's worker threads record and add feedback concurrently: nothing lost, no lock error."""
    errors = []

    def work(k: int) -> None:
        try:
            for j in range(15):
                store.record_prediction(study_id((k, j)), MODEL, service_answer(PROBS, "normal"))
                store.add_feedback(study_id((k, j)), "agree", {"Nodule": "absent"}, reader=f"r{k}")
        except Exception as err:  # pragma: no cover - shown by the assert below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.feedback()) == 90 and len(store.predictions()) == 91
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_path_is_kept(tmp_path):
    assert FeedbackStore(str(tmp_path / "a.db")).path == Path(tmp_path / "a.db")


def test_a_version_1_store_gains_the_patient_column_when_opened(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    FeedbackStore(path).record_prediction(study_id(1), MODEL, service_answer(PROBS, "abnormal"))
    with sqlite3.connect(path) as con:  # as cxrkit wrote it before patient keys
        con.execute("ALTER TABLE predictions DROP COLUMN patient")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'version'")
    store = FeedbackStore(path)
    store.record_prediction(study_id(2), MODEL, service_answer(PROBS, "normal"), patient_id="MRN-9")
    assert [p["patient"] is None for p in store.predictions()] == [True, False]
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == ("2",)
