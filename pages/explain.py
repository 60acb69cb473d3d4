"""Explain: Grad-CAM heat maps of the three heads side by side for one face."""

import functools

import streamlit as st

from model.heatmap_draw import OVERLAY_ALPHA
from model.labels import HEAD_NAMES
from model.results import CAM_METHODS
from ui import photos, state, widgets

widgets.page_header(
    "Explain a prediction",
    "Grad-CAM highlights the pixels that pushed a head towards its answer. Warm areas mattered most. "
    "A heat map shows where the network looked, not why a person is who they are.",
)
analyzer = state.get_analyzer()
results = state.session_results()
if not results:
    st.info("No analysed photo yet: analyze one on the **Analyze** page, or explain the sample photo here.",
            icon=":material/info:")
    if st.button("Explain the sample photo", key="explain_sample", icon=":material/photo_camera_front:"):
        sample = widgets.sample_source()
        if sample:
            state.analyze_all(analyzer, [sample])
            st.rerun()
    st.stop()

with st.sidebar:
    st.subheader("Heat map settings")
    photo = results[st.selectbox("Photo", range(len(results)), format_func=lambda i: results[i].name,
                                 key="explain_photo")]
    face = photo.faces[st.selectbox("Face", range(len(photo.faces)), key="explain_face",
                                    format_func=lambda i: widgets.face_label(photo.faces[i]))]
    method = st.radio("Method", list(CAM_METHODS), key="explain_method", format_func=widgets.method_label,
                      help="Grad-CAM is fast; Grad-CAM++ spreads credit over several regions; "
                      "Score-CAM needs no gradients but runs the network many times (slower).")
    alpha = st.slider("Heat map opacity", 0.0, 1.0, OVERLAY_ALPHA, 0.05, key="explain_alpha")

picture, summary = st.columns([1, 3], vertical_alignment="center")
picture.image(photos.crop_box(photos.annotate(photo.photo, [face]), face.box, margin=1.0), width="stretch",
              caption=f"{photo.name}, face {face.index + 1}")
with summary:
    widgets.prediction_summary(face)
    st.caption("Each map explains one head. Pick a target class to ask \"what looks like this class?\" "
               "instead of explaining the prediction. Change the method and opacity in the sidebar.")
for head, column in zip(HEAD_NAMES, st.columns(len(HEAD_NAMES))):
    with column, st.container(border=True):
        st.subheader(widgets.HEAD_TITLES[head])
        target = st.selectbox("Target class", widgets.target_options(head), key=f"explain_target_{head}",
                              format_func=lambda t, h=head: widgets.target_label(h, t, face),
                              disabled=head == "age")
        explanation = widgets.explanation_or_none(analyzer, photo, face, head, target=target, method=method, alpha=alpha)
        if explanation is None:
            continue
        st.image(photos.crop_box(explanation.overlay, face.box), width="stretch",
                 caption=f"{widgets.method_label(explanation.method)} for: {explanation.target_name}")
        st.download_button("Download overlay (PNG)", functools.partial(photos.png_bytes, explanation.overlay),
                           f"facelens_{head}_{explanation.method}_face{face.index + 1}.png", "image/png",
                           key=f"explain_download_{head}", icon=":material/download:")
