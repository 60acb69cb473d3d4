"""Streamlit blocks of the Dataset explorer: folder indexing with a progress bar and
caching, the headline numbers and the filterable grid of sample faces.

The tables and figures come from ui.dataset_charts, the folder index from training.explorer.
"""

from __future__ import annotations

import contextvars
from pathlib import Path

import streamlit as st

from model import settings
from model.labels import ETHNICITIES, GENDERS
from training import explorer
from ui import charts


def dataset_folder_default() -> str:
    folder = settings.utkface_dir()
    return str(folder) if folder else ""


def folder_given_explicitly() -> bool:
    """True when UTKFACE_DIR names an existing folder (then the explorer starts on it)."""
    return settings.utkface_dir_from_env()



@st.cache_data(show_spinner=False, max_entries=4)
def _index_folder(folder: str, modified: float, _progress=None):
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

    try:
        summary, frame = _index_folder(str(path.resolve()), path.stat().st_mtime, _progress=progress)
    except OSError as exc:
        bar.empty()
        st.error(f"Could not read {path}: {exc}", icon=":material/folder_off:")
        st.stop()
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


@st.cache_data(show_spinner=False, max_entries=256)
def _thumbnail(path: str, modified: float):
    """A dataset image's thumbnail, decoded once (not on every filter or slider change);
    ``modified`` keys the cache to the file's current contents."""
    return explorer.thumbnail(path)


def _cached_thumbnail(path: str):
    try:
        modified = Path(path).stat().st_mtime
    except OSError:
        return None  # gone since it was indexed: like a file that does not decode
    return _thumbnail(str(path), modified)


def sample_grid(frame) -> None:
    """A filterable grid of sample faces from the indexed folder."""
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
        image = _cached_thumbnail(row.path)
        if image is not None:
            images.append(image)
            captions.append(f"{row.age} · {row.gender} · {charts.short_ethnicity(row.ethnicity)}")
    st.image(images, caption=captions, width=116)
    if st.button("Shuffle", key="grid_shuffle", icon=":material/shuffle:"):
        st.session_state["grid_seed"] = seed + 1
        st.rerun()
