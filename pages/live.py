"""Live: the webcam's video with each face's box, age and gender drawn on it as it plays."""

import streamlit as st

from ui import live, runtime, state, widgets

runtime.run_through_navigation()  # a linked page as the server's first request: see ui.runtime

widgets.page_header(
    "Live camera",
    "Point your webcam at a face: each face gets a box, a number that follows it, and its estimated age "
    "and gender, averaged over the last frames. Estimates, not facts.",
)
webrtc = live.webrtc_module()
if webrtc is None:
    st.stop()
analyzer = state.get_analyzer()
processor = live.processor(analyzer)

video, side = st.columns([3, 2])
with video:
    ctx = live.streamer(webrtc, processor)
with side:
    st.fragment(run_every=live.REFRESH_S)(live.figures)(ctx, processor)
    if st.button("Freeze and analyze", key="live_freeze", icon=":material/pause_circle:",
                 help="Keep the current frame and open it on the Analyze page: full cards and Grad-CAM."):
        live.freeze(processor)
    st.caption("Boxes follow faces between detections; a face keeps its number while it stays in view. "
               "The still-photo camera on the Analyze page works without a live connection.")
