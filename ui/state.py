"""The app's state: one cached analyzer per server (or a test's fake) and each browser
session's analysed photos."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import streamlit as st

from model import settings
from ui import photos, runtime

RESULTS_KEY = "facelens_results"
#: Analysed photos kept per browser session (in memory only), by count and by what they hold
#: (PhotoAnalysis.kept_bytes: the upload and its encoded screen images, not decoded pixels).
MAX_KEPT_PHOTOS = 12
MAX_KEPT_BYTES = 32 * 1024 * 1024  # about eight phone photos

_override: Any | None = None


class ModelMissingError(FileNotFoundError):
    """The model file to serve does not exist (fresh clone, or FACELENS_MODEL points nowhere)."""


def set_analyzer_override(analyzer: Any | None) -> None:
    """Serve ``analyzer`` instead of the model file (tests); None restores the real one."""
    global _override
    _override = analyzer


def build_analyzer(model_path: str | Path | None = None):
    """The real FaceAnalyzer for ``model_path`` (default: settings.model_path())."""
    path = Path(model_path) if model_path else settings.model_path()
    if not path.is_file():
        raise ModelMissingError(
            f"No model file at {path}. Train one (python -m training.train ...) or point "
            "FACELENS_MODEL at a .keras file."
        )
    from model.analyzer import FaceAnalyzer

    return FaceAnalyzer(path)


@st.cache_resource(show_spinner=False, max_entries=1)
def _cached_analyzer(model_path: str, modified: float):
    """One analyzer per server; a replaced model file (new mtime) is loaded afresh."""
    return build_analyzer(model_path)


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_card(card_path: str, version: tuple[int, int]):
    """One parsed card per file version, shared (not copied per call: the pages only read it)."""
    from model.card import read_card

    return read_card(card_path)


def model_card():
    """The served model's card (None when it has none), read once per file version: every page
    and each face card ask for it on every rerun."""
    path = settings.model_card_path()
    try:
        stat = path.stat()
    except OSError:
        return None
    return _cached_card(str(path), (stat.st_mtime_ns, stat.st_size))  # a rewrite changes one or both


def card_mismatch() -> str | None:
    """A warning when the served model's card was written for another model file (by the
    SHA-256 export stores in it), e.g. FACELENS_MODEL_CARD left pointing at an older card;
    None when it matches, or when the card or model cannot tell. The Model page asks once per
    rerun; the model file's hash is computed once per file version (model.card.file_sha256)."""
    card, model_path = model_card(), settings.model_path()
    if card is None or card.describes(model_path) is not False:
        return None
    return (f"This card ({settings.model_card_path()}) was written for another model file than the one "
            f"being served ({model_path}): its figures may not describe the answers you get. Export the "
            "model again, or point FACELENS_MODEL_CARD at its own card.")


def get_analyzer():
    """The analyzer, built once per server process; stops the page with a clear message if it can't be."""
    override = _override
    if override is not None:
        return override
    path = settings.model_path()
    try:
        modified = path.stat().st_mtime if path.is_file() else 0.0
        with st.spinner("Loading the face model (first visit only: a few seconds, up to half a minute "
                        "on a machine's very first start, which compiles it for fast inference)..."):
            return _cached_analyzer(str(path), modified)
    except ModelMissingError as exc:
        st.error(str(exc))
    except Exception as exc:  # a corrupt or incompatible model file
        st.error(f"Could not load the model from {path}: {type(exc).__name__}: {exc}")
    st.stop()


def _results() -> OrderedDict:
    return st.session_state.setdefault(RESULTS_KEY, OrderedDict())


def analyze_all(analyzer, sources: list[tuple[str, bytes]]) -> list[photos.PhotoAnalysis]:
    """Analyse each photo once per session (reruns reuse the results)."""
    store = _results()
    out = []
    analysed = False
    for number, (name, data) in enumerate(sources, start=1):
        digest = photos.digest_of(data)
        if digest not in store:
            with st.spinner(f"Finding and analysing faces in {name} ({number}/{len(sources)})..."):
                store[digest] = photos.analyze_bytes(analyzer, name, data)
            analysed = True
        store.move_to_end(digest)
        out.append(store[digest])
    _evict(store, keep=len(sources))
    if analysed:  # the decoded photo and the pipeline's buffers are garbage now: return them
        runtime.release_free_memory()
    return out


def _evict(store: OrderedDict, keep: int) -> None:
    """Forget the oldest photos beyond the count or memory budget, never the ``keep`` newest."""
    def kept() -> int:
        return sum(a.kept_bytes for a in store.values())

    while len(store) > max(keep, 1) and (len(store) > MAX_KEPT_PHOTOS or kept() > MAX_KEPT_BYTES):
        store.popitem(last=False)


def session_results() -> list[photos.PhotoAnalysis]:
    """Analysed photos with faces, most recent first."""
    return [a for a in reversed(_results().values()) if a.ok]
