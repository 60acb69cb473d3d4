"""Streamlit glue of the Live page: the WebRTC streamer and its frame callback, the live
figures, the connection hints and the freeze button. The frame work is model.live's."""

from __future__ import annotations

import logging
import time

import numpy as np
import streamlit as st

from model import settings
from model.live import FrameClock, LiveProcessor
from ui import photos, widgets

PROCESSOR_KEY = "live_processor"
STREAM_KEY = "live_stream"
CONNECTING_SINCE_KEY = "live_connecting_since"
#: Seconds between refreshes of the figures (each refresh is a short script run).
REFRESH_S = 2.0
#: Seconds of "connecting" (or of a connection with no frames) before the page says WebRTC failed.
CONNECT_TIMEOUT_S = 20.0
#: Consecutive frames dropped as stale before the frame clock starts its estimate afresh.
STALE_RESTART = 30
VIDEO_CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False}
ANALYZE_PAGE = "pages/analyze.py"

_log = logging.getLogger(__name__)


def webrtc_module():
    """streamlit_webrtc, imported safely next to TensorFlow; None after saying why it is unavailable."""
    try:
        from model.webrtc_compat import import_aiortc

        import_aiortc()
        import streamlit_webrtc
    except ImportError as exc:
        st.error(f"The live camera needs streamlit-webrtc, which is not installed here ({exc}). "
                 "Install it with `pip install -r requirements.txt`, or take a still photo with the camera on "
                 "the Analyze page.", icon=":material/videocam_off:")
        st.page_link(ANALYZE_PAGE, label="Go to the Analyze page", icon=":material/photo_camera:")
        return None
    return streamlit_webrtc


def rtc_configuration() -> dict:
    """ICE servers from FACELENS_ICE_SERVERS; none (no STUN lookup) by default or when malformed."""
    try:
        servers = settings.ice_servers()
    except ValueError as exc:
        st.error(f"{exc}. Using no ICE servers.", icon=":material/settings:")
        servers = []
    return {"iceServers": servers}


def processor(analyzer) -> LiveProcessor:
    """This browser session's frame processor (created once, sharing the server's analyzer)."""
    live = st.session_state.get(PROCESSOR_KEY)
    if live is None or live.detector is not analyzer.detector:
        live = st.session_state[PROCESSOR_KEY] = LiveProcessor(analyzer.detector, analyzer.predictor)
    return live


def frames_callback(live: LiveProcessor):
    """The async callback streamlit-webrtc runs on its worker thread with the frames queued since the last call."""
    import av

    clock = FrameClock()
    stale = [0]

    async def callback(frames: list) -> list:
        frame = live.latest(frames)
        try:
            out = live.process(frame.to_ndarray(format="rgb24"), age_s=clock.age(frame.time))
        except Exception:  # keep the stream alive; the traceback goes to the server log, never the frame
            _log.exception("live frame processing failed")
            return [frame]
        if out is None:  # too old: the previous annotated frame stays on screen
            stale[0] += 1
            if stale[0] >= STALE_RESTART:
                clock.restart()
                stale[0] = 0
            return []
        stale[0] = 0
        return [av.VideoFrame.from_ndarray(out.image, format="rgb24")]

    return callback


def streamer(webrtc, live: LiveProcessor):
    """The video component: the browser's camera in, annotated video back."""
    return webrtc.webrtc_streamer(
        key=STREAM_KEY,
        mode=webrtc.WebRtcMode.SENDRECV,
        rtc_configuration=rtc_configuration(),
        media_stream_constraints=VIDEO_CONSTRAINTS,
        queued_video_frames_callback=frames_callback(live),
        async_processing=True,
        video_html_attrs={"autoPlay": True, "controls": False, "muted": True, "style": {"width": "100%"}},
    )


def connection_state(ctx) -> str:
    """idle | connecting | failed | playing | stalled (playing, but no frame for a while)."""
    state = ctx.state
    now = time.monotonic()
    if not state.playing and not state.signalling:
        st.session_state.pop(CONNECTING_SINCE_KEY, None)
        return "idle"
    since = st.session_state.setdefault(CONNECTING_SINCE_KEY, now)
    if not state.playing:
        return "failed" if now - since > CONNECT_TIMEOUT_S else "connecting"
    live = st.session_state.get(PROCESSOR_KEY)
    last = live.stats.last_frame_at if live is not None else None
    waited = now - (last if last is not None else since)
    return "stalled" if waited > CONNECT_TIMEOUT_S else "playing"


def _fallback_hint(message: str) -> None:
    st.warning(f"{message} Set `FACELENS_ICE_SERVERS` to a STUN/TURN server when the app runs on a remote "
               "server (see the README). Meanwhile, the Analyze page takes a still photo with the camera.",
               icon=":material/videocam_off:")
    st.page_link(ANALYZE_PAGE, label="Take a still photo on the Analyze page", icon=":material/photo_camera:")


def figures(ctx, live: LiveProcessor) -> None:
    """Frames per second, latency and time per stage, refreshed every second."""
    state = connection_state(ctx)
    if state == "idle":
        st.info("Press **Start** under the video to turn on your camera. Frames are processed in memory and "
                "never stored.", icon=":material/videocam:")
        return
    if state == "connecting":
        st.caption("Connecting to the server...")
        return
    if state == "failed":
        _fallback_hint(f"WebRTC could not connect within {CONNECT_TIMEOUT_S:.0f} seconds.")
        return
    if state == "stalled":
        _fallback_hint("Connected, but no video frames arrive.")
        return
    snap = live.stats.snapshot()
    fps, latency = st.columns(2)
    fps.metric("Annotated fps", f"{snap['fps']:.1f}",
               help=f"Annotated frames per second: frames drawn on and sent back; the camera sends {snap['input_fps']:.0f}.")
    latency.metric("Latency", f"{snap['latency_ms']:.0f} ms",
                   help="From a camera frame reaching the server to its annotated frame (median of the last "
                   f"3 s; 90th percentile {snap['latency_p90_ms']:.0f} ms). Network and the browser add to it.")
    last = live.last_frame()
    faces = last[1] if last is not None else []
    st.markdown("  \n".join(f"**{face.label()}** · {face.ethnicity} {face.ethnicity_probability:.0%}"
                             for face in faces) or "No face in view.")
    stages = snap["stages_ms"]
    size = "x".join(str(v) for v in reversed(live.frame_size)) if live.frame_size else "-"
    st.caption(" · ".join(f"{name} {stages[name]:.1f} ms" for name in ("track", "align", "model", "draw", "total"))
               + " per frame (medians)")
    st.caption(f"Face detection (MTCNN, in the background every {live.config.detect_every} frames or when a face "
               f"is lost): {snap['detect_ms']:.0f} ms · camera {size} at {snap['input_fps']:.0f} frames per second · "
               f"frames skipped as stale or superseded: {snap['dropped']}")
    if live.detection_error:
        st.warning(f"Detection: {live.detection_error}", icon=":material/groups:")


def freeze(live: LiveProcessor) -> None:
    """Send the current frame to the Analyze page (full cards, Grad-CAM) and go there."""
    last = live.last_frame()
    if last is None:
        st.warning("No frame yet: start the camera first.", icon=":material/info:")
        return
    frame, _ = last
    name = f"live_frame_{time.strftime('%H%M%S')}.png"
    widgets.hand_over_photo("analyze", name, photos.png_bytes(np.ascontiguousarray(frame)))
    st.switch_page(ANALYZE_PAGE)
