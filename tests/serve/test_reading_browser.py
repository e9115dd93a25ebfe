"""The reading view in headless Chromium, asserted on what is on screen: zoom changes the displayed scale,
window/level changes the pixels, the heatmap really hides (computed style and screenshot colour), maps
of findings below threshold stay hidden by default, each probability says what it has meant, the header
panel shows the DICOM facts, keyboard navigation, reader feedback posts and reads back; no console
error and no request leaving the server. Screenshots go to test-artifacts/ (regenerated here)."""

import hashlib
import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import png_bytes
from live import live_server
from PIL import Image
from test_reading import dicom_bytes

from cxrkit.config import ServeConfig
from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel
from cxrkit.serve.app import create_app

ARTIFACTS = Path(os.environ.get("CXR_TEST_ARTIFACTS", "test-artifacts"))


def shot(page, selector: str = "#viewport") -> np.ndarray:
    """The element's pixels as drawn on screen (RGB)."""
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)


def colour(px: np.ndarray) -> float:
    """Mean channel spread: 0 for a grey film, well above for a jet-coloured heatmap over it."""
    return float((px.max(2) - px.min(2)).mean())


def studies(run: Path, root: Path) -> list[Path]:
    """Test-split phantoms as PNGs (in distribution: three normal, two abnormal), a 12-bit DICOM and a
    corrupt file."""
    data = load_run_data(run)
    test = np.sort(data.partition["test"])
    normal = data.targets[test, list(data.labels).index("No Finding")] == 1
    files = []
    for k, r in enumerate([*test[normal][:3], *test[~normal][:2]]):
        f = root / f"phantom-{k}.png"
        f.write_bytes(png_bytes(np.asarray(data.cache.images[r])))
        files.append(f)
    (root / "film.dcm").write_bytes(dicom_bytes()[0])
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return [*files, root / "film.dcm", root / "broken.png"]


def test_reading_view_on_screen(phantom_run, tmp_path):
    from browser import chromium_page, require_chromium, upload_to_viewer

    require_chromium()
    files = studies(phantom_run, tmp_path)
    model = json.loads((phantom_run / "model.json").read_text())
    db = tmp_path / "feedback.sqlite"
    cfg = ServeConfig(feedback=str(db), keep_images=str(tmp_path / "kept"))
    app = create_app(RunModel.load(phantom_run, "cpu"), cfg)
    seen: dict = {}
    external: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(app) as url, chromium_page(seen) as page:
        page.set_viewport_size({"width": 1440, "height": 900})
        upload_to_viewer(page, url, files, external)
        page.wait_for_function(
            "document.querySelector('#caption').textContent.length > 0"
            " && !document.querySelector('#caption').textContent.startsWith('computing')"
        )
        # the corrupt file is an error row at the top (a person must look), with its reason
        first = page.locator("#worklist tbody tr").first
        assert "error" in first.inner_text()
        results = page.evaluate(
            "state.results.map(i => i.result && {flag: i.result.triage.flag,"
            " heat: i.result.heatmap, ood: i.result.ood.in_distribution,"
            " name: i.file.name})"
        )
        assert results[-1] is None

        # keyboard: j/k walk the worklist in its order; the panel follows
        order = page.evaluate("ordered().map(i => i.file.name)")
        page.click("#worklist tbody tr:nth-child(2)")
        page.click("#heat-on")  # focus on a toolbar control must not swallow the keys
        for key, k in (("j", 2), ("j", 3), ("k", 2)):
            page.keyboard.press(key)
            page.wait_for_function(f"document.querySelector('#study .name').textContent === {order[k]!r}")
            selected = page.eval_on_selector("#worklist tr.selected", "r => r.cells[1].textContent")
            assert selected == order[k]

        def open_study(name: str) -> None:
            page.evaluate(f"openStudy(state.results.find(i => i.file.name === {name!r}))")
            page.wait_for_function("!document.querySelector('#caption').textContent.startsWith('computing')")

        # a study whose top finding is below its threshold: the map stays hidden, the caption says why
        quiet = [r for r in results if r and not r["heat"]["above_threshold"] and r["ood"]]
        loud = [r for r in results if r and r["heat"]["above_threshold"] and r["ood"]]
        assert quiet and loud, results  # normal phantoms below threshold, abnormal ones above
        open_study(quiet[0]["name"])
        assert page.evaluate("getComputedStyle(document.querySelector('#heat')).display") == "none"
        assert "not suspected" in page.inner_text("#caption")
        open_study(loud[0]["name"])  # a suspected finding's map is on by default, and captioned
        page.wait_for_function("document.querySelector('#heat').complete")
        assert page.evaluate("getComputedStyle(document.querySelector('#heat')).display") != "none"
        assert "not a segmentation" in page.inner_text("#caption") and colour(shot(page)) > 5

        # zoom: the wheel enlarges the displayed film, double-click fits it again
        open_study("film.dcm")
        page.wait_for_timeout(200)  # the readout speaks the file's own values for its window
        assert "window 1800 / level 1000 (file values)" in page.inner_text("#readout")
        width = lambda: page.evaluate("document.querySelector('#film').getBoundingClientRect().width")  # noqa: E731
        fitted = width()
        box = page.locator("#viewport").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(4):  # four notches of 15%
            page.mouse.wheel(0, -100)
            page.wait_for_timeout(60)
        page.wait_for_timeout(200)
        assert width() == pytest.approx(fitted * 1.15**4, rel=0.01)
        page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(200)
        assert abs(width() - fitted) < 1

        # the heatmap toggle truly hides the layer: computed style and the colour of the screenshot
        page.click("button.link[data-label='Effusion']")  # a click asks for a map, suspected or not
        page.wait_for_function(
            "document.querySelector('#heat').complete && document.querySelector('#heat').naturalWidth > 0"
        )
        page.wait_for_timeout(200)
        assert page.evaluate("getComputedStyle(document.querySelector('#heat')).display") != "none"
        shown = shot(page)
        page.click("#heat-on")
        page.wait_for_timeout(200)
        assert page.evaluate("getComputedStyle(document.querySelector('#heat')).display") == "none"
        hidden = shot(page)
        assert colour(shown) > 5 * colour(hidden) + 1, (colour(shown), colour(hidden))
        page.fill("#opacity", "100")  # opacity follows the slider
        assert page.evaluate("getComputedStyle(document.querySelector('#heat')).opacity") == "1"

        # window/level: the file's first window is the default; a right-drag changes the pixels shown
        assert page.evaluate("document.querySelector('#preset').options[0].textContent").endswith(
            "SOFT (from the file)"
        )
        before = shot(page)
        page.mouse.move(box["x"] + 300, box["y"] + 300)
        page.mouse.down(button="right")
        page.mouse.move(box["x"] + 420, box["y"] + 360, steps=5)  # 120 px right, 60 down
        page.mouse.up(button="right")
        page.wait_for_timeout(300)
        after = shot(page)
        # wider by 120 display units, level up by 30 (0.5 per pixel): in the file's values
        lo, hi = page.evaluate("state.current.result.display.value_range")
        k = (hi - lo) / 255
        want_w, want_c = 1800 + 120 * k, 1000 + 30 * k
        assert f"window {want_w:.0f} / level {want_c:.0f} (file values)" in page.inner_text("#readout")
        inside = before.max(2) > 0
        assert after[inside].std() < 0.9 * before[inside].std()  # a wider window: less contrast on screen
        page.keyboard.press("i")  # invert: dark becomes bright
        page.wait_for_timeout(300)
        inverted = shot(page)
        film = (after.max(2) > 0) & (inverted.max(2) > 0)  # inside the film (the backdrop is black)
        assert np.abs(inverted - after)[film].mean() > 20

        # the header panel: DICOM facts, no name (the service was not started with --show-patient-id)
        header = page.inner_text("[data-testid=header]")
        assert "DX" in header and "2024-01-02" in header and "Doe" not in header

        # each probability says what it has meant, from the run's reliability bins (computed here)
        label, p = max(page.evaluate("state.current.result.probabilities").items(), key=lambda kv: kv[1])
        bins = model["validation"]["reliability"]["bins"]
        edges = np.linspace(0, 1, len(bins[label]) + 1)
        lo, hi, n, pos = bins[label][int(np.searchsorted(edges[1:-1], p, side="right"))]  # as Python counts
        title = page.get_attribute(f".bar[data-label='{label}']", "title")
        assert (
            title
            == f"of {n} validation studies scored {lo:.1f}–{hi:.1f}, {pos} ({100 * pos / n:.0f}%) had {label}"
        )
        (elo, ehi, _, _), lab = next((b, lab) for lab in bins for b in bins[lab] if b[2] == 0)
        said = page.evaluate(f"meaning({lab!r}, {(elo + ehi) / 2})")
        no_record = f"no validation study was scored {elo:.1f}–{ehi:.1f} for {lab}"
        assert said == f"{no_record}: this probability has no track record"

        # the model card: AUC with its interval and n, the operating point, the synthetic-data banner
        page.click("#card summary")
        card = page.inner_text("[data-testid=model-card]")
        ci = model["validation"]["macro_auc_ci"]
        assert f"{ci[0]:.3f}–{ci[1]:.3f}" in card and f"on {model['validation']['images']} images" in card
        assert "synthetic phantoms" in page.inner_text("#warnings")
        page.click("#card summary")

        # reader feedback: agree + one finding, saved and read back through the API
        page.check("#study input[value=agree]")
        page.select_option("#study select[data-label='Effusion']", "present")
        page.fill("#study textarea", "fine")
        page.click("#send-feedback")
        page.wait_for_function(
            "document.querySelector('[data-testid=feedback-status]').textContent.startsWith('saved')"
        )
        page.screenshot(path=str(ARTIFACTS / "reading-view.png"))
        rows = httpx.get(url + "/v1/feedback").json()["feedback"]
    study = hashlib.sha256((tmp_path / "film.dcm").read_bytes()).hexdigest()
    assert [(r["study"], r["triage"], r["findings"]) for r in rows] == [
        (study, "agree", {"Effusion": "present"})
    ]
    # the one expected console line: Chromium logs the corrupt upload's 422 answer
    console = [e for e in seen["console_errors"] if "status of 422" not in e]
    assert len(console) == len(seen["console_errors"]) - 1
    assert console + seen["page_errors"] + seen["failed_requests"] == [] and external == []
