"""End to end: the Live page in headless Chromium, whose fake camera plays a real portrait.

The clip (scikit-image's astronaut drifting and zooming, 640x480 at 30 fps) is written
as .y4m and given to Chromium's fake capture device; the page starts the WebRTC stream
against `streamlit run app.py` (no ICE servers: loopback only) and must show annotated
video (the first face's box colour, absent from the clip, appears in the received
frames), an age and gender label, and a frames-per-second figure. Reuses the server
fixture of the other browser test; skips with the reason when Chromium, Playwright or
streamlit-webrtc is missing. Every wait is bounded.
"""

from __future__ import annotations

import base64
import importlib.util
import re

import numpy as np
import pytest

from model.live import TRACK_COLOURS
from tests.test_e2e_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, FIRST_RESULT_MS, STEP_MS, app_url  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FPS = 30
VIDEO_MS = 120_000
COMPONENT = "iframe[title*='webrtc_streamer']"


def box_colour_pixels(frame: np.ndarray, tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` (per channel) of face 1's box colour."""
    diff = np.abs(frame[..., :3].astype(int) - np.array(TRACK_COLOURS[0]))
    return int((diff.max(-1) <= tolerance).sum())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    if importlib.util.find_spec("streamlit_webrtc") is None:  # found, not imported: aiortc must load before TF
        pytest.skip("streamlit-webrtc is not installed (requirements.txt)")
    from model.live_bench import astronaut_clip, write_y4m

    frames = astronaut_clip(4 * FPS, fps=FPS)  # one full cycle, so the looping camera has no jump
    return frames, write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", frames, FPS)


def video_frame(page) -> np.ndarray | None:
    """The frame the page's <video> shows now (RGBA), or None before video plays."""
    from PIL import Image

    url = page.frame_locator(COMPONENT).locator("video").first.evaluate(
        """(v) => { if (!v.videoWidth) return null;
            const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
            c.getContext('2d').drawImage(v, 0, 0); return c.toDataURL('image/png'); }""")
    if not url:
        return None
    import io

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_live_page_streams_annotated_video_with_labels_and_fps(app_url, clip):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    frames, path = clip
    assert max(box_colour_pixels(f) for f in frames[::10]) < 200  # the colour is the annotation's, not the photo's
    ARTIFACTS.mkdir(exist_ok=True)
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={path}", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(STEP_MS)
            page.goto(app_url, wait_until="domcontentloaded", timeout=STEP_MS)
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Live", exact=True).click()
            expect(page.get_by_role("heading", name="Live camera")).to_be_visible()
            start = page.frame_locator(COMPONENT).get_by_role("button", name=re.compile("start", re.I))
            start.click(timeout=FIRST_RESULT_MS)

            fps = page.get_by_test_id("stMetric").filter(has_text="Annotated fps")
            expect(fps).to_be_visible(timeout=FIRST_RESULT_MS)
            label = page.get_by_text(re.compile(r"^1: \d+ y, (Male|Female|Unsure)$"))
            expect(label.first).to_be_visible(timeout=VIDEO_MS)
            expect(fps.get_by_test_id("stMetricValue")).not_to_have_text("0.0", timeout=VIDEO_MS)
            assert float(fps.get_by_test_id("stMetricValue").inner_text()) > 0

            annotated = 0
            for _ in range(30):  # the received video carries the box and label colour
                frame = video_frame(page)
                if frame is not None:
                    annotated = max(annotated, box_colour_pixels(frame))
                    if annotated > 800:
                        break
                page.wait_for_timeout(1000)
            assert annotated > 800, f"no annotated video: {annotated} box-coloured pixels"
            assert page.locator("[data-testid='stException']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "live_page.png"))
        finally:
            browser.close()
