"""Streamlit building blocks shared by the pages: the cached analyzer, photo inputs,
face cards, Grad-CAM views and result tables.

Pages call these and stay short flat scripts. The logic underneath lives in
model.service (photos, tables), model.charts and training.explorer (figures);
TensorFlow is only reached through the analyzer object.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from pathlib import Path

import streamlit as st

from model import charts, service, settings
from model.labels import ETHNICITIES, GENDERS, HEAD_NAMES

RESULTS_KEY = "facelens_results"
#: Analysed photos kept per browser session (in memory only), by count and by decoded size.
MAX_KEPT_PHOTOS = 12
MAX_KEPT_PIXELS = 80_000_000
HEAD_TITLES: dict[str, str] = {"age": "Age", "gender": "Gender", "ethnicity": "Ethnicity"}
HEAD_CLASSES: dict[str, tuple[str, ...]] = {"gender": GENDERS, "ethnicity": ETHNICITIES}


# --- the analyzer -----------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _cached_analyzer(model_path: str):
    return service.build_analyzer(model_path)


def get_analyzer():
    """The analyzer, built once per server process; stops the page with a clear message if it can't be."""
    override = service.analyzer_override()
    if override is not None:
        return override
    path = str(settings.model_path())
    try:
        with st.spinner("Loading the face model (first visit only, a few seconds)..."):
            return _cached_analyzer(path)
    except service.ModelMissingError as exc:
        st.error(str(exc))
    except Exception as exc:  # a corrupt or incompatible model file
        st.error(f"Could not load the model from {path}: {type(exc).__name__}: {exc}")
    st.stop()


# --- photo inputs and results -----------------------------------------------------------------


def _use_sample(prefix: str) -> None:
    st.session_state[f"{prefix}_use_sample"] = True


def photo_sources(prefix: str) -> list[tuple[str, bytes]]:
    """Uploader, camera and sample button; returns (name, bytes) of the photos to analyse."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        uploads = st.file_uploader(
            "Upload one or more photos", type=list(service.UPLOAD_TYPES), accept_multiple_files=True,
            key=f"{prefix}_upload", max_upload_size=settings.MAX_UPLOAD_MB, help=f"JPG, PNG, WebP or BMP, up to {settings.MAX_UPLOAD_MB} MB each. "
            "Photos stay in memory and are never stored.",
        ) or []
    with right:
        st.button("Try a sample photo", key=f"{prefix}_sample", icon=":material/photo_camera_front:",
                  on_click=_use_sample, args=(prefix,), width="stretch")
        camera_on = st.toggle("Use the camera", key=f"{prefix}_camera_on")
    sources = [(f.name, f.getvalue()) for f in uploads]
    if camera_on:
        shot = st.camera_input("Take a photo", key=f"{prefix}_camera")
        if shot is not None:
            sources.append(("camera.jpg", shot.getvalue()))
    if not sources and st.session_state.get(f"{prefix}_use_sample"):
        sources.append((service.SAMPLE_NAME, service.sample_photo_bytes()))
    return sources


def _results() -> OrderedDict:
    return st.session_state.setdefault(RESULTS_KEY, OrderedDict())


def analyze_all(analyzer, sources: list[tuple[str, bytes]]) -> list[service.PhotoAnalysis]:
    """Analyse each photo once per session (reruns reuse the results)."""
    store = _results()
    out = []
    for number, (name, data) in enumerate(sources, start=1):
        digest = service.digest_of(data)
        if digest not in store:
            with st.spinner(f"Finding and analysing faces in {name} ({number}/{len(sources)})..."):
                store[digest] = service.analyze_bytes(analyzer, name, data)
        store.move_to_end(digest)
        out.append(store[digest])
    _evict(store, keep=len(sources))
    return out


def _evict(store: OrderedDict, keep: int) -> None:
    """Forget the oldest photos beyond the count or pixel budget, never the ``keep`` newest."""
    def pixels() -> int:
        return sum(a.photo.shape[0] * a.photo.shape[1] for a in store.values() if a.photo is not None)

    while len(store) > max(keep, 1) and (len(store) > MAX_KEPT_PHOTOS or pixels() > MAX_KEPT_PIXELS):
        store.popitem(last=False)


def session_results() -> list[service.PhotoAnalysis]:
    """Analysed photos with faces, most recent first."""
    return [a for a in reversed(_results().values()) if a.ok]


def show_problems(analyses: list[service.PhotoAnalysis]) -> None:
    icons = {"no_face": ":material/face_retouching_off:", "too_many": ":material/groups:"}
    for analysis in analyses:
        if analysis.status in ("no_face", "too_many"):
            st.warning(analysis.message, icon=icons[analysis.status])
        elif not analysis.ok:
            st.error(analysis.message, icon=":material/broken_image:")


def faces_summary(analyses: list[service.PhotoAnalysis]) -> None:
    """All faces of all photos in one table, with CSV and JSON downloads."""
    frame = service.faces_frame(analyses)
    st.subheader(f"All faces ({len(frame)})")
    st.dataframe(frame.drop(columns=["box_x", "box_y", "box_w", "box_h"]), hide_index=True, key="faces_table",
                 column_config={
                     "gender_probability": st.column_config.ProgressColumn("P(gender)", format="percent"),
                     "ethnicity_probability": st.column_config.ProgressColumn("P(ethnicity)", format="percent"),
                     "detection_confidence": st.column_config.NumberColumn("detection", format="%.2f"),
                 })
    left, right, _ = st.columns([1, 1, 3])
    left.download_button("Download CSV", service.faces_csv(analyses), "facelens_faces.csv", "text/csv",
                         key="download_csv", icon=":material/download:")
    right.download_button("Download JSON", service.faces_json(analyses), "facelens_faces.json",
                          "application/json", key="download_json", icon=":material/download:")


def photo_result(analysis: service.PhotoAnalysis, analyzer) -> None:
    """The photo with numbered boxes beside one card per face."""
    n = len(analysis.faces)
    photo_col, cards_col = st.columns([2, 3] if n == 1 else [1, 2])
    with photo_col:
        st.image(service.for_display(service.annotate(analysis.photo, analysis.faces)), width="stretch",
                 caption=f"{analysis.name}: {n} face{'s' if n != 1 else ''} found")
    with cards_col:
        per_row = 1 if n == 1 else 2
        for start in range(0, n, per_row):
            for col, face in zip(st.columns(per_row), analysis.faces[start:start + per_row]):
                with col:
                    face_card(analysis, face, analyzer)


def face_card(analysis: service.PhotoAnalysis, face, analyzer) -> None:
    key = f"{analysis.digest[:12]}_{face.index}"
    with st.container(border=True):
        colour = service.box_colour_hex(face.index)
        st.markdown(f"<span style='color:{colour};font-size:1.25rem'>&#9632;</span> **Face {face.index + 1}**",
                    unsafe_allow_html=True)
        thumb, numbers = st.columns([1, 1.4])
        slot = thumb.empty()
        with numbers:
            low, high = face.age_interval
            st.metric("Estimated age", service.age_text(face.age),
                      help="Expected value of the predicted age distribution.")
            st.caption(f"80% interval {low:.0f}-{high:.0f} years · age group {face.age_group}",
                       help="The model is 80% sure the apparent age lies in this range.")
            st.metric("Gender", face.gender.capitalize(), help="UTKFace's binary gender label.")
            st.caption(f"probability {face.gender_probability:.0%}")
        st.markdown("**Ethnicity** (UTKFace's coarse categories)")
        st.plotly_chart(charts.ethnicity_bar(face.ethnicity_probabilities), key=f"eth_{key}",
                        config={"displayModeBar": False})
        st.caption(f"Detection confidence {face.detection_confidence:.1%}")
        show_cam = st.toggle("Grad-CAM heat map", key=f"cam_{key}", help="Which pixels drove a prediction.")
        head = "age"
        if show_cam:
            head = st.segmented_control("Head", HEAD_NAMES, default="age", key=f"camhead_{key}",
                                           format_func=HEAD_TITLES.get, label_visibility="collapsed") or "age"
        explanation = explain(analyzer, analysis, face, head) if show_cam else None
        if explanation is not None:
            slot.image(service.crop_box(explanation.overlay, face.box), width="stretch",
                       caption=f"Grad-CAM for {HEAD_TITLES[head].lower()}: {explanation.target_name}")
        else:
            slot.image(service.crop_box(analysis.photo, face.box), width="stretch")


def explain(analyzer, analysis: service.PhotoAnalysis, face, head: str, target: int | None = None,
            method: str = "gradcam", alpha: float = 0.45):
    """One heat map, or None after showing why it failed (the page keeps running)."""
    try:
        with st.spinner(f"Computing {method} for the {head} head..."):
            return analyzer.explain(analysis.photo, face, head, target=target, method=method, alpha=alpha)
    except Exception as exc:
        st.error(f"Could not compute the heat map ({type(exc).__name__}: {exc}).")
        return None


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


def sidebar_footer() -> None:
    with st.sidebar:
        st.caption(
            "facelens estimates apparent age, gender and UTKFace ethnicity category from a face. "
            "Estimates can be wrong; see the Model page for where they are less accurate."
        )


def dataset_folder_default() -> str:
    folder = settings.utkface_dir()
    return str(folder) if folder else ""


def folder_given_explicitly() -> bool:
    """True when UTKFACE_DIR names an existing folder (then the explorer starts on it)."""
    import os

    value = os.environ.get("UTKFACE_DIR", "").strip()
    return bool(value) and Path(value).expanduser().is_dir()


METHOD_LABELS: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def prediction_summary(face) -> None:
    """The three predictions of one face as a row of metrics."""
    age, gender, ethnicity = st.columns(3)
    age.metric("Estimated age", service.age_text(face.age))
    gender.metric("Gender", face.gender.capitalize(), help=f"probability {face.gender_probability:.0%}")
    ethnicity.metric("Ethnicity", charts.short_ethnicity(face.ethnicity),
                     help=f"probability {face.ethnicity_probabilities[face.ethnicity]:.0%}")


PER_CLASS_COLUMNS = {
    "recall": st.column_config.NumberColumn("recall", format="percent", help="Share of this class found."),
    "precision": st.column_config.NumberColumn("precision", format="percent",
                                               help="Share of predictions of this class that were right."),
}


def face_label(face) -> str:
    return f"Face {face.index + 1}: about {face.age:.0f} years, {face.gender}"


# --- dataset explorer -------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=4)
def _index_folder(folder: str, modified: float, _progress=None):
    from training import explorer

    return explorer.index_folder(folder, progress=_progress)


def indexed_folder(folder: str):
    """(summary, per-face frame) of a UTKFace folder, indexed once per change with a progress bar."""
    path = Path(folder.strip()).expanduser() if folder and folder.strip() else None
    if path is None or not path.is_dir():
        st.warning(f"Not a folder: {folder or '(empty)'}. Enter the path of a UTKFace folder in the sidebar.",
                   icon=":material/folder_off:")
        st.stop()
    bar = st.progress(0.0, text=f"Indexing {path} ...")
    # Update the bar from a context captured outside the cached function: Streamlit would
    # otherwise record the updates for cache replay, and the bar lives outside the function.
    outside = contextvars.copy_context()

    def progress(done: int, total: int) -> None:
        text = f"Indexing {path.name}: {done:,} of {total:,} files"
        outside.run(bar.progress, min(done / max(total, 1), 1.0), text)

    summary, frame = _index_folder(str(path.resolve()), path.stat().st_mtime, _progress=progress)
    bar.empty()
    if frame.empty:
        st.warning(f"No UTKFace-style images ([age]_[gender]_[race]_[date].jpg) in {path}.",
                   icon=":material/folder_off:")
        st.stop()
    st.caption(f"Indexed {len(frame):,} faces from `{path}`.")
    return summary, frame


def dataset_headline(summary: dict) -> None:
    splits = summary.get("splits") or {}
    imbalance = summary.get("imbalance") or {}
    cols = st.columns(4)
    cols[0].metric("Faces", f"{summary.get('n', 0):,}")
    cols[1].metric("Held-out test faces", f"{splits.get('test', 0):,}",
                   help=f"Train {splits.get('train', 0):,} / validation {splits.get('val', 0):,} / test "
                   f"{splits.get('test', 0):,}, split by a hash of each image's content so copies never straddle splits.")
    cols[2].metric("Ethnicity imbalance", f"{imbalance.get('ethnicity') or 0:.1f}x",
                   help="Largest ethnicity category over the smallest.")
    cols[3].metric("Age-group imbalance", f"{imbalance.get('age_group') or 0:.1f}x",
                   help="Largest age group over the smallest non-empty one.")


def sample_grid(frame) -> None:
    """A filterable grid of sample faces from the indexed folder."""
    from training import explorer

    st.subheader("Sample faces")
    left, middle, right = st.columns([1, 2, 2])
    genders = left.multiselect("Gender", GENDERS, key="grid_gender")
    ethnicities = middle.multiselect("Ethnicity", ETHNICITIES, key="grid_ethnicity",
                                     format_func=charts.short_ethnicity)
    low, high = int(frame["age"].min()), int(frame["age"].max())
    ages = right.slider("Age", low, max(high, low + 1), (low, max(high, low + 1)), key="grid_ages")
    seed = st.session_state.get("grid_seed", 0)
    shown = explorer.filter_samples(frame, genders, ethnicities, ages, limit=24, seed=seed)
    if shown.empty:
        st.info("No faces match these filters.")
        return
    images, captions = [], []
    for row in shown.itertuples():
        image = explorer.thumbnail(row.path)
        if image is not None:
            images.append(image)
            captions.append(f"{row.age} · {row.gender} · {charts.short_ethnicity(row.ethnicity)}")
    st.image(images, caption=captions, width=116)
    if st.button("Shuffle", key="grid_shuffle", icon=":material/shuffle:"):
        st.session_state["grid_seed"] = seed + 1
        st.rerun()
