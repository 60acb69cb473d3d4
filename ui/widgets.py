"""Streamlit building blocks shared by the pages: photo inputs, face cards, Grad-CAM
views and result tables.

Pages call these and stay short flat scripts. The logic underneath lives in
ui.photos (photos, tables) and ui.charts (figures); TensorFlow is only reached
through the analyzer object.
"""

from __future__ import annotations

import functools

import streamlit as st

from model import settings
from model.calibration import UNFAMILIAR_WARNING, unfamiliarity_text
from model.heatmap_draw import OVERLAY_ALPHA
from model.labels import HEAD_CLASSES, HEAD_NAMES
from model.results import CAM_METHODS, DEFAULT_CAM_METHOD
from ui import charts, photos, state

HEAD_TITLES: dict[str, str] = {"age": "Age", "gender": "Gender", "ethnicity": "Ethnicity"}
UPLOAD_HINT: str = f"{photos.UPLOAD_TYPE_NAMES} (iPhone: HEIC), up to {settings.MAX_UPLOAD_MB} MB each."


# --- photo inputs and results -----------------------------------------------------------------


def _use_sample(prefix: str) -> None:
    st.session_state[f"{prefix}_use_sample"] = True
    st.session_state.pop(f"{prefix}_handed_over", None)


def hand_over_photo(prefix: str, name: str, data: bytes) -> None:
    """Give the ``prefix`` page's photo inputs a photo from elsewhere (the Live page's frozen frame)."""
    st.session_state[f"{prefix}_handed_over"] = (name, data)


def photo_sources(prefix: str) -> list[tuple[str, bytes]]:
    """Uploader, camera and sample button; returns (name, bytes) of the photos to analyse."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        # No ``type=``: the browser would refuse other files with a red chip whose reason shows
        # only on hover. Every file reaches the app instead, which says on the page why it
        # cannot read one (the accepted formats are image_io.IMAGE_FORMATS).
        uploads = st.file_uploader(
            "Upload one or more photos", accept_multiple_files=True,
            key=f"{prefix}_upload", max_upload_size=settings.MAX_UPLOAD_MB,
            help=f"{UPLOAD_HINT} Photos stay in memory and are never stored.",
        ) or []
        st.caption(f"{UPLOAD_HINT} A larger file is refused by the browser and shown in red above.")
    with right:
        st.button("Try a sample photo", key=f"{prefix}_sample", icon=":material/photo_camera_front:",
                  on_click=_use_sample, args=(prefix,), width="stretch")
        camera_on = st.toggle("Use the camera", key=f"{prefix}_camera_on")
    sources = [(f.name, f.getvalue()) for f in uploads]
    if camera_on:
        shot = st.camera_input("Take a photo", key=f"{prefix}_camera")
        if shot is not None:
            sources.append(("camera.jpg", shot.getvalue()))
    handed_over = st.session_state.get(f"{prefix}_handed_over")
    if not sources and handed_over:
        sources.append(handed_over)
    elif not sources and st.session_state.get(f"{prefix}_use_sample"):
        sample = sample_source()
        if sample:
            sources.append(sample)
    return sources


def sample_source() -> tuple[str, bytes] | None:
    """(name, bytes) of the sample portrait, or None after explaining why it is unavailable."""
    try:
        return photos.SAMPLE_NAME, photos.sample_photo_bytes()
    except (ImportError, OSError) as exc:
        st.error(f"The sample photo comes with scikit-image, which is not available here ({exc}). "
                 "Install it with `pip install scikit-image`, or upload a photo.")
        return None


def show_problems(analyses: list[photos.PhotoAnalysis]) -> None:
    icons = {"no_face": ":material/face_retouching_off:", "too_many": ":material/groups:"}
    for analysis in analyses:
        if analysis.status in ("no_face", "too_many"):
            st.warning(analysis.message, icon=icons[analysis.status])
        elif not analysis.ok:
            st.error(analysis.message, icon=":material/broken_image:")
        for note in analysis.notes:
            st.info(note, icon=":material/info:")


def faces_summary(analyses: list[photos.PhotoAnalysis]) -> None:
    """All faces of all photos in one table, with CSV and JSON downloads."""
    frame = photos.faces_frame(analyses)
    st.subheader(f"All faces ({len(frame)})")
    st.dataframe(frame.drop(columns=["box_x", "box_y", "box_w", "box_h"]), hide_index=True, key="faces_table",
                 column_config={
                     "gender_probability": st.column_config.ProgressColumn("P(gender)", format="percent"),
                     "ethnicity_probability": st.column_config.ProgressColumn("P(ethnicity)", format="percent"),
                     "detection_confidence": st.column_config.NumberColumn("detection", format="%.2f"),
                 })
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Download CSV", photos.faces_csv(analyses), "facelens_faces.csv", "text/csv",
                         key="download_csv", icon=":material/download:")
    right.download_button("Download JSON", photos.faces_json(analyses), "facelens_faces.json",
                          "application/json", key="download_json", icon=":material/download:")


def photo_result(analysis: photos.PhotoAnalysis, analyzer) -> None:
    """The photo with numbered boxes beside one card per face."""
    n = len(analysis.faces)
    photo_col, cards_col = st.columns([2, 3] if n == 1 else [1, 2])
    with photo_col:
        st.image(analysis.display, width="stretch", caption=photo_caption(analysis))
    with cards_col:
        per_row = 1 if n == 1 else 2
        for start in range(0, n, per_row):
            for col, face in zip(st.columns(per_row), analysis.faces[start:start + per_row]):
                with col:
                    face_card(analysis, face, analyzer)


def photo_caption(analysis: photos.PhotoAnalysis) -> str:
    """Name and face count; faces left out and frames are the notes' (shown once, above)."""
    n = len(analysis.faces)
    return f"{analysis.name}: {n} face{'s' if n != 1 else ''}"


def face_card(analysis: photos.PhotoAnalysis, face, analyzer) -> None:
    key = f"{analysis.digest[:12]}_{face.index}"
    with st.container(border=True):
        colour = photos.box_colour_hex(face.index)
        st.markdown(f"<span style='color:{colour};font-size:1.25rem'>&#9632;</span> **Face {face.index + 1}**",
                    unsafe_allow_html=True)
        thumb, numbers = st.columns([1, 1.4])
        slot = thumb.empty()
        with numbers:
            low, high = face.age_interval
            st.metric("Estimated age", photos.age_text(face.age),
                      help="Expected value of the predicted age distribution.")
            st.caption(f"80% interval {low:.0f}-{high:.0f} years · age group {face.age_group}",
                       help="The model is 80% sure the apparent age lies in this range.")
            headline, detail = photos.gender_text(face.gender, face.gender_probability)
            st.metric("Gender", headline, help="UTKFace's binary gender label.")
            st.caption(detail)
            note = photos.gender_age_note(state.model_card(), face.age_group)
            if note:
                st.caption(f":material/info: {note}")
        if face.unfamiliar:
            st.warning(f"{UNFAMILIAR_WARNING} {unfamiliarity_text(face.unfamiliarity)} Its age interval is "
                       "wider and its probabilities less sure for that reason.", icon="⚠️")
        st.markdown("**Ethnicity** (UTKFace's coarse categories)")
        st.markdown(charts.ethnicity_bars_html(face.ethnicity_probabilities), unsafe_allow_html=True)
        st.caption(f"Detection confidence {face.detection_confidence:.1%}")
        show_cam = st.toggle("Grad-CAM heat map", key=f"cam_{key}", help="Which pixels drove a prediction.")
        head = "age"
        if show_cam:
            head = st.segmented_control("Head", HEAD_NAMES, default="age", key=f"camhead_{key}",
                                        format_func=HEAD_TITLES.get, label_visibility="collapsed") or "age"
        explanations = explanations_or_none(analyzer, analysis, face, [(head, None)]) if show_cam else None
        explanation = explanations[head] if explanations else None
        if explanation is not None:
            slot.image(photos.crop_box(explanation.overlay, face.box), width="stretch",
                       caption=f"Grad-CAM for {HEAD_TITLES[head].lower()}: {explanation.target_name}")
        else:
            slot.image(analysis.thumbs[face.index], width="stretch")


def explanations_or_none(analyzer, analysis: photos.PhotoAnalysis, face, requests: list[tuple[str, int | None]],
                         method: str = DEFAULT_CAM_METHOD, alpha: float = OVERLAY_ALPHA) -> dict | None:
    """{head: Explanation} of one face's requested (head, target) pairs, computed in one
    batched call under one spinner; or None after one error message (the page keeps running)."""
    heads = " and ".join(", ".join(head for head, _ in requests).rsplit(", ", 1))
    try:
        with st.spinner(f"Computing {method_label(method)} for the {heads} head{'s' if len(requests) > 1 else ''}..."):
            return analyzer.explain_heads(analysis.photo, face, requests, method=method, alpha=alpha)
    except Exception as exc:
        st.error(f"Could not compute the heat map{'s' if len(requests) > 1 else ''} ({type(exc).__name__}: {exc}).")
        return None


def explanation_view(explanation, face) -> None:
    """One head's overlay around the face, with its PNG download."""
    st.image(photos.crop_box(explanation.overlay, face.box), width="stretch",
             caption=f"{method_label(explanation.method)} for: {explanation.target_name}")
    st.download_button("Download overlay (PNG)", functools.partial(photos.png_bytes, explanation.overlay),
                       f"facelens_{explanation.head}_{explanation.method}_face{face.index + 1}.png", "image/png",
                       key=f"explain_download_{explanation.head}", icon=":material/download:")


def method_label(method: str) -> str:
    return CAM_METHODS.get(method, method)


def prediction_summary(face) -> None:
    """The three predictions of one face as a row of metrics."""
    age, gender, ethnicity = st.columns(3)
    age.metric("Estimated age", photos.age_text(face.age))
    headline, detail = photos.gender_text(face.gender, face.gender_probability)
    gender.metric("Gender", headline, help=detail)
    ethnicity.metric("Ethnicity", charts.short_ethnicity(face.ethnicity),
                     help=f"probability {face.ethnicity_probabilities[face.ethnicity]:.0%}")


def target_options(head: str) -> list[int | None]:
    """Classes a heat map can target: None means the predicted class (age: the expected age)."""
    return [None, *range(len(HEAD_CLASSES.get(head, ())))]


def target_label(head: str, target: int | None, face=None) -> str:
    if target is None:
        if head == "age":
            return "estimated age"
        predicted = getattr(face, head, None) if face is not None else None
        return f"predicted ({charts.short_ethnicity(predicted) if head == 'ethnicity' else predicted})" \
            if predicted else "predicted class"
    name = HEAD_CLASSES[head][target]
    return charts.short_ethnicity(name) if head == "ethnicity" else name


def page_header(title: str, intro: str) -> None:
    st.title(title)
    st.caption(intro)


def how_it_works(input_size: int) -> None:
    """The pipeline in four steps; ``input_size`` is the served model's (FACELENS_MODEL may
    name another model than the shipped one)."""
    with st.expander("How it works", icon=":material/help:"):
        st.markdown(
            f"""
1. **Find faces.** MTCNN detects each face and five landmarks (eyes, nose, mouth corners).
2. **Align.** The face is rotated and scaled so the landmarks sit where they sit in UTKFace's
   aligned crops, the framing the network was trained on, then resized to {input_size} x {input_size} pixels.
3. **Estimate.** One MobileNetV2 with three heads predicts an age distribution (its mean is the
   estimate, its central 80% the interval), a gender probability and five ethnicity probabilities.
4. **Explain.** Grad-CAM weighs the last convolutional features by their gradients to show which
   regions drove each head.

Photos are processed in memory and never stored. See the **Model** page for accuracy by group.
"""
        )


def sidebar_footer() -> None:
    with st.sidebar:
        st.caption(
            "facelens estimates apparent age, gender and UTKFace ethnicity category from a face. "
            "Estimates can be wrong; see the Model page for where they are less accurate."
        )


def face_label(face) -> str:
    headline = photos.gender_text(face.gender, face.gender_probability)[0]
    return f"Face {face.index + 1}: about {face.age:.0f} years, {headline.lower()}"


# --- model page -------------------------------------------------------------------------------

PER_CLASS_COLUMNS = {
    "recall": st.column_config.NumberColumn("recall", format="percent", help="Share of this class found."),
    "precision": st.column_config.NumberColumn("precision", format="percent",
                                               help="Share of predictions of this class that were right."),
}

def _calibration_columns() -> dict:
    columns = {f"{title}: {when}": st.column_config.NumberColumn(format=fmt)
               for title, _, fmt in charts.CALIBRATION_FIGURES for when in ("before", "after")}
    columns["flagged unfamiliar"] = st.column_config.NumberColumn(
        format="percent", help="Share of faces the app flags as unlike the photos the model learned from.")
    return columns


CALIBRATION_COLUMNS = _calibration_columns()

EVALUATION_COLUMNS = {
    "age MAE (years)": st.column_config.NumberColumn(format="%.2f"),
    "age bias (years)": st.column_config.NumberColumn(format="%+.2f", help="Predicted minus true age; negative: too young."),
    "age in labelled range": st.column_config.NumberColumn(format="percent",
                                                           help="Share of ages inside a labelled age range."),
    "gender accuracy": st.column_config.NumberColumn(format="percent"),
    "ethnicity accuracy": st.column_config.NumberColumn(format="percent"),
    "gender ECE": st.column_config.NumberColumn(format="%.3f"),
}

#: The hidden-hair table's accuracy columns as percentages.
HIDDEN_HAIR_COLUMNS = {
    f"{who}: {label}": st.column_config.NumberColumn(format="percent")
    for who in ("women", "men") for label in charts.HAIR_VIEW_LABELS.values()
}
