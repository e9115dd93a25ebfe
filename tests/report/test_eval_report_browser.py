"""The evaluation report opens in headless Chromium: no console errors, every plot decoded and shown."""

import numpy as np
from browser import open_page, require_chromium
from PIL import Image


def test_report_renders_in_chromium(phantom_eval, tmp_path):
    require_chromium()
    shot = tmp_path / "report.png"
    seen = open_page(phantom_eval / "report.html", shot)
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["failed_requests"] == []
    alts = {i["alt"] for i in seen["images"]}
    for plot in (
        "ROC curves per label",
        "PR curves per label",
        "confusion matrices",
        "reliability diagram before and after calibration",
        "triage sweep",
        "sample predictions",
        "per-label ROC-AUC with intervals",
    ):
        assert plot in alts, plot
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown"] > 100, img
    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert px.shape[0] > 3000  # the whole page, not one screen
    assert px.std() > 20  # not blank
    assert (px < 128).mean() > 0.01  # dark ink: text, curves and images were drawn
