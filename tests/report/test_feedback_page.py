"""feedback.html: what it shows, what it never shows (comments, reader names), and its warnings."""

import html
import re

from feedback_helpers import MODEL, PATIENT, service_answer, study_id

from cxrkit.report.feedback import feedback_page
from cxrkit.workflows.feedback import FeedbackStore
from cxrkit.workflows.feedback_report import feedback_figures


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _store(tmp_path, digests=(MODEL["digest"],), label="Effusion") -> FeedbackStore:
    s = FeedbackStore(tmp_path / "f.db")
    for k, digest in enumerate(digests * 6):
        probs = {label: 0.2 + 0.1 * k, "No Finding": 0.5}
        s.record_prediction(study_id(k), {**MODEL, "digest": digest}, service_answer(probs, "abnormal"))
        s.add_feedback(study_id(k), "agree", {label: "present"}, f"{PATIENT} again", reader="Dr Jones")
    return s


def test_the_page_shows_the_figures_but_no_comment_or_reader_name(tmp_path):
    page = feedback_page(feedback_figures(_store(tmp_path), n_boot=100))
    text = _text(page)
    assert PATIENT not in page and "Dr Jones" not in page
    assert "Comments are left out of this report" in text
    assert "flagged abnormal (flag precision)" in text and "100.0% [61.0%, 100.0%]" in text  # 6 of 6, Wilson
    assert "Effusion" in text and "Cohen's kappa [95% CI]" in text
    assert "Warning" not in text and re.search(r"\b1\s+named readers", text)


def test_feedback_on_several_models_is_warned_about(tmp_path):
    page = feedback_page(feedback_figures(_store(tmp_path, digests=("ab" * 32, "cd" * 32)), n_boot=0))
    assert "Warning: this feedback spans 2 model versions" in _text(page)
    assert "abababababababab…" in page and "cdcdcdcdcdcdcdcd…" in page


def test_label_names_are_escaped(tmp_path):
    page = feedback_page(feedback_figures(_store(tmp_path, label="<script>x</script>"), n_boot=0))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_an_empty_store_still_renders(tmp_path):
    text = _text(feedback_page(feedback_figures(FeedbackStore(tmp_path / "f.db"), n_boot=10)))
    assert "No reader marked a finding" in text and "every verdict" in text
