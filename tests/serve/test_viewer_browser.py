"""The web viewer in headless Chromium: upload the ../shared samples (real films: a DICOM, PNGs, a JPEG),
open each in the reading view, see bars with thresholds, out-of-distribution banners and a worklist."""

import io
import os
from pathlib import Path

import numpy as np
from conftest import shared_path
from live import live_server

from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel
from cxrkit.serve.app import create_app

ARTIFACTS = Path(os.environ.get("CXR_TEST_ARTIFACTS", "test-artifacts"))


def test_viewer_scores_samples_and_shows_bars_overlays_and_worklist(exported_run):
    from browser import chromium_page, require_chromium, upload_to_viewer

    require_chromium()
    samples = sorted(shared_path("data", "samples").iterdir())
    app = create_app(RunModel.load(exported_run, "cpu", engine="onnx"), ServeConfig())
    seen: dict = {}
    banner_png = None
    external: list[str] = []
    with live_server(app) as url, chromium_page(seen) as page:
        upload_to_viewer(page, url, samples, external)
        assert "engine onnx" in page.inner_text("#model")
        cards = []
        for name in [p.name for p in samples]:  # each study opened in the reading view, as a reader would
            page.evaluate(f"openStudy(state.results.find(i => i.file.name === {name!r}))")
            page.wait_for_function("!document.querySelector('#caption').textContent.startsWith('computing')")
            cards.append(
                page.evaluate(
                    """(() => { const c = document.querySelector('#study'); return {
                    bars: c.querySelectorAll('.bar').length,
                    marks: c.querySelectorAll('.bar .mark').length,
                    widths: [...c.querySelectorAll('.bar .fill')].map(f => parseFloat(f.style.width)),
                    film: document.querySelector('#film').getBoundingClientRect().width,
                    flag: c.querySelector('.flag').textContent,
                    banner: (b => b ? {text: b.textContent, height: b.getBoundingClientRect().height,
                                       shown: getComputedStyle(b).display !== 'none'
                                              && getComputedStyle(b).visibility === 'visible'} : null)(
                        c.querySelector('.banner.ood'))}; })()"""
                )
            )
            banner = page.query_selector("#study .banner.ood")
            if banner is not None:
                banner_png = banner.screenshot()
            if name.endswith(".dcm"):  # the real film, large, as the README shows it
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "viewer.png"))
        rows = page.evaluate(
            "[...document.querySelectorAll('#worklist tbody tr')].map(r => [r.cells[2].textContent,"
            " r.cells[3].textContent])"
        )
        with page.expect_download() as download:
            page.click("#csv")
        csv = Path(download.value.path()).read_text()
    errors = seen["console_errors"] + seen["page_errors"] + seen["failed_requests"]
    assert errors == [] and external == []
    for card in cards:
        assert (
            card["bars"] == card["marks"] == 15
            and card["film"] > 400  # read large, not as a thumbnail
            and card["flag"] in ("abnormal", "normal", "out of distribution")
        )
        # a study out of distribution carries a visible banner on its card; the others none
        if card["flag"] == "out of distribution":
            b = card["banner"]
            assert b and b["shown"] and b["height"] > 10 and "read this study manually" in b["text"]
        else:
            assert card["banner"] is None
        assert card["widths"] == sorted(card["widths"], reverse=True)  # sorted high to low
    # most urgent first: out of distribution (read manually), then by triage score
    keys = [(flag.startswith("out of distribution"), float(score)) for flag, score in rows]
    assert len(keys) == len(samples) and keys == sorted(keys, reverse=True)
    lines = csv.strip().splitlines()
    assert lines[0].startswith("rank,file,triage_flag,triage_score") and len(lines) == len(samples) + 1
    if banner_png is not None:  # the banner's pixels: its amber background, as drawn on screen
        from PIL import Image

        px = np.asarray(Image.open(io.BytesIO(banner_png)).convert("RGB")).reshape(-1, 3).astype(int)
        amber = (np.abs(px - [0xFF, 0xF8, 0xC5]).max(1) <= 8).mean()
        assert amber > 0.5, amber
