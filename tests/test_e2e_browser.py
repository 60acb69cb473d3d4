"""End to end in a real browser: `streamlit run app.py` driven by headless Chromium.

Uploads the sample portrait, waits for a face card, visits every page and saves
screenshots to test-artifacts/ (gitignored). Every request the page makes is recorded:
none may go to a host other than the app's own (no font, icon or analytics service), and
a file the app cannot read is refused with its reason visible on the page. Uses the shipped model when present,
otherwise an untrained one of the same shape (the card must appear; its numbers are
not checked). Skips with the reason when Chromium or Playwright is missing. Every
wait is bounded, so a broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from model import settings
from tests.app_support import portrait_bytes, write_model_card
from tools.serve import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SERVER_START_S = 90
#: Loading TensorFlow + the model, MTCNN and the first inference on 2 busy CPU cores.
FIRST_RESULT_MS = 240_000
STEP_MS = 90_000




@pytest.fixture(scope="module")
def app_url(tmp_path_factory, untrained_model_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}; install it with `apt-get install chromium`")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    tmp = tmp_path_factory.mktemp("e2e")
    model = settings.DEFAULT_MODEL_PATH if settings.DEFAULT_MODEL_PATH.is_file() else untrained_model_path
    card = settings.DEFAULT_MODEL_CARD_PATH
    if not (settings.DEFAULT_MODEL_PATH.is_file() and card.is_file()):
        card = write_model_card(tmp / "card.json")
    env = {**os.environ, "FACELENS_MODEL": str(model), "FACELENS_MODEL_CARD": str(card), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("UTKFACE_DIR", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "streamlit.log").open("w")
    proc = subprocess.Popen(
        ["nice", "-n", "5", sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp / 'streamlit.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)
        log.close()


def _no_exception(page) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


def _foreign_requests(urls: list[str], app_url: str) -> list[str]:
    """Requests to anything but the app's own origin (data: and blob: URLs stay in the browser)."""
    from urllib.parse import urlsplit

    own = urlsplit(app_url).netloc
    return [u for u in urls if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != own]


def test_a_link_to_a_page_opens_that_page_without_a_not_found_dialog(app_url):
    """The module's first test, so a linked page is the server's very first page request: until a
    session has run st.navigation, Streamlit runs a pages/ file on its own (old-style navigation,
    no app.py); the page sends itself back through st.navigation (ui.runtime). Each page's URL
    path is its file's name: with a pages/ folder beside st.navigation, Streamlit showed "Page
    not found" over a linked page whose path differed (/model, before it became model_card). The
    default page lives at / and /analyze and /home switch to it (app.py's hidden pages)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            for path, heading in (("explain", "Explain a prediction"), ("model_card", "The model"),
                                  ("dataset", "Dataset explorer"), ("analyze", "Analyze a photo"),
                                  ("home", "Analyze a photo")):
                linked = browser.new_page(viewport={"width": 1200, "height": 900})
                linked.goto(urljoin(app_url + "/", path), wait_until="domcontentloaded", timeout=STEP_MS)
                expect(linked.get_by_role("heading", name=heading)).to_be_visible(timeout=STEP_MS)
                linked.wait_for_timeout(1500)
                assert linked.get_by_text("Page not found").count() == 0, path
                nav = linked.get_by_test_id("stSidebarNav")
                expect(nav.get_by_role("link", name="Dataset explorer", exact=True)).to_be_visible()  # app.py's titles
                _no_exception(linked)
                linked.close()
        finally:
            browser.close()


def test_upload_photo_and_visit_every_page(app_url):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda ws: requested.append(ws.url))
            page.set_default_timeout(STEP_MS)
            page.goto(app_url, wait_until="domcontentloaded", timeout=STEP_MS)
            expect(page.get_by_role("heading", name="Analyze a photo")).to_be_visible()
            # Exactly the five pages of st.navigation: the pages/ folder is not auto-listed too.
            nav = page.get_by_test_id("stSidebarNav").get_by_role("link")
            expect(nav).to_have_count(5)
            labels = [t.strip().splitlines()[-1] for t in nav.all_inner_texts()]  # the icon name comes first
            assert labels == ["Analyze", "Live", "Explain", "Dataset explorer", "Model"]

            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
                files=[{"name": "portrait.png", "mimeType": "image/png", "buffer": portrait_bytes()}])
            expect(page.get_by_text("Estimated age").first).to_be_visible(timeout=FIRST_RESULT_MS)
            expect(page.get_by_text("Face 1", exact=True).first).to_be_visible()
            expect(page.get_by_text("Detection confidence").first).to_be_visible()
            # The favicon is the app's own file (headless Chromium may never request a favicon, so its
            # address is checked too: a ":material/...:" page icon points at fonts.gstatic.com).
            icon = page.locator("link[rel='shortcut icon'], link[rel='icon']").first.get_attribute("href") or ""
            assert not _foreign_requests([urljoin(app_url + "/", icon)], app_url), icon
            page.wait_for_timeout(1500)  # let the Plotly bars finish drawing before the screenshot
            _no_exception(page)
            page.screenshot(path=str(ARTIFACTS / "analyze_page.png"), full_page=True)

            for link, heading, shot in (
                ("Explain", "Explain a prediction", "explain_page.png"),
                ("Dataset explorer", "Dataset explorer", "dataset_page.png"),
                ("Model", "The model", "model_page.png"),
            ):
                page.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True).click()
                expect(page.get_by_role("heading", name=heading)).to_be_visible()
                if link == "Explain":  # heat maps of the photo analysed above, one per head
                    expect(page.get_by_role("button", name="Download overlay (PNG)")).to_have_count(3, timeout=FIRST_RESULT_MS)
                else:
                    expect(page.locator(".js-plotly-plot").first).to_be_visible()
                page.wait_for_timeout(1500)
                _no_exception(page)
                page.screenshot(path=str(ARTIFACTS / shot), full_page=True)

            # A file the app cannot read: the reason is on the page, not only in a chip's tooltip.
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Analyze", exact=True).click()
            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
                files=[{"name": "scan.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 not a photo"}])
            expect(page.get_by_text("Could not read scan.pdf: the file is not an image")).to_be_visible()
            page.wait_for_timeout(1000)
        finally:
            browser.close()
    assert any(u.startswith(app_url) for u in requested) and any("/_stcore/stream" in u for u in requested)
    foreign = _foreign_requests(requested, app_url)
    assert not foreign, f"the page asked other hosts: {sorted(set(foreign))}"
    for name in ("analyze_page.png", "explain_page.png", "dataset_page.png", "model_page.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
