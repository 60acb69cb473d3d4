"""Explain: Grad-CAM heat maps of the three heads side by side for one face."""

import streamlit as st

from model.heatmap_draw import OVERLAY_ALPHA
from model.labels import HEAD_NAMES
from model.results import CAM_METHODS
from ui import photos, runtime, state, widgets

runtime.run_through_navigation()  # a linked page as the server's first request: see ui.runtime

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
boxes = {head: column.container(border=True) for head, column in zip(HEAD_NAMES, st.columns(len(HEAD_NAMES)))}
targets = {}
for head, box in boxes.items():
    with box:
        st.subheader(widgets.HEAD_TITLES[head])
        targets[head] = st.selectbox("Target class", widgets.target_options(head), key=f"explain_target_{head}",
                                     format_func=lambda t, h=head: widgets.target_label(h, t, face),
                                     disabled=head == "age")
# All three maps in one batched call: one spinner, and one message if it fails.
explanations = widgets.explanations_or_none(analyzer, photo, face, list(targets.items()), method=method, alpha=alpha)
card = state.model_card()
for head, explanation in (explanations or {}).items():
    with boxes[head]:
        widgets.explanation_view(explanation, face)
        st.caption(photos.map_trust_note(card, method, head))
