"""Open a local HTML file in Debian's headless Chromium (driven by Playwright) and report what it shows."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip (visibly) without Chromium on a developer machine; in CI (``CI`` set) its absence fails."""
    missing = not Path(CHROMIUM).exists()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        msg = f"browser test needs Chromium at {CHROMIUM} and playwright (.ci/run installs both)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@contextmanager
def chromium_page(seen: dict) -> Iterator:
    """A Playwright page in headless Debian Chromium (fresh profile) that records into ``seen``:
    console errors, page errors and failed requests."""
    from playwright.sync_api import sync_playwright

    seen.update(console_errors=[], page_errors=[], failed_requests=[])
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = ctx.new_page()
            page.on("console", lambda m: m.type == "error" and seen["console_errors"].append(m.text))
            page.on("pageerror", lambda e: seen["page_errors"].append(str(e)))
            page.on("requestfailed", lambda r: seen["failed_requests"].append(r.url))
            yield page
        finally:
            ctx.close()


def open_page(path: Path, screenshot: Path) -> dict:
    """Console errors, page errors, failed requests and <img> states of ``path``; a full-page screenshot."""
    seen: dict = {}
    with chromium_page(seen) as page:
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=30_000)
        seen["images"] = page.evaluate(
            "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
            "w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))"
        )
        seen["title"] = page.title()
        page.screenshot(path=str(screenshot), full_page=True)
    return seen


def upload_to_viewer(page, url: str, files, external: list[str]) -> None:
    """Open the viewer at ``url``, record any request leaving the server into ``external``, upload
    ``files`` and wait until every one has an answer or an error in the worklist."""
    page.on("request", lambda r: r.url.startswith((url, "data:", "blob:")) or external.append(r.url))
    page.goto(url + "/", wait_until="load")
    page.wait_for_function("document.querySelector('#model').textContent.includes('engine')")
    page.set_input_files("#files", [str(f) for f in files])
    page.wait_for_function(f"document.querySelectorAll('#worklist tbody tr').length === {len(files)}")
    page.wait_for_function("state.results.every(i => i.result || i.error)")
