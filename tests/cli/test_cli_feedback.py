"""``cxr feedback DB --export CSV --report HTML``: what it prints, and its one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
from feedback_helpers import MODEL, service_answer, study_id

from cxrkit.cli import main
from cxrkit.workflows.feedback import FeedbackStore


def _one_error(capsys, rc: int, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (rc, err)
    for name in names:
        assert name in err, (name, err)
    return err


@pytest.fixture
def db(tmp_path):
    s = FeedbackStore(tmp_path / "feedback.db")
    (tmp_path / "kept").mkdir()
    for k in range(4):
        image = tmp_path / "kept" / f"{study_id(k)}.png"
        if k:
            image.write_bytes(b"png")
        probs = {"Effusion": 0.7, "No Finding": 0.2}
        s.record_prediction(study_id(k), MODEL, service_answer(probs, "abnormal"), str(image) if k else None)
        s.add_feedback(study_id(k), "agree", {"Effusion": "present"}, reader="a")
    return s.path


def test_export_and_report_print_what_they_wrote(db, tmp_path, capsys):
    csv, page = tmp_path / "labels.csv", tmp_path / "feedback.html"
    assert main(["feedback", str(db), "--export", str(csv), "--report", str(page), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {csv}: 3 studies, 2 label columns" in out
    assert "skipped 1 of 4 studies: not kept: start the service with --keep-images DIR" in out
    assert f"wrote {page}: 4 verdicts on 4 studies from 1 named reader" in out
    assert len(pd.read_csv(csv)) == 3 and page.is_file()


def test_errors_are_one_line(db, tmp_path, capsys):
    _one_error(capsys, main(["feedback", str(db)]), "needs --export CSV, --report HTML or both")
    missing = tmp_path / "nope.db"
    _one_error(capsys, main(["feedback", str(missing), "--export", "x.csv"]), str(missing), "no such")
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    _one_error(
        capsys, main(["feedback", str(junk), "--report", "x.html"]), str(junk), "not a feedback database"
    )
