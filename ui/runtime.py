"""Streamlit runtime settings the app needs: applied once at start-up from app.py, and the check
every page runs first (:func:`run_through_navigation`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

_log = logging.getLogger(__name__)
#: Streamlit's own clean-up function, kept when it is replaced (one item; empty before).
STREAMLIT_CLEAN_UP: list = []


def _close_pyplot_figures() -> None:
    """What Streamlit's own clean-up does after a script run, minus ``keras.backend.clear_session()``."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        try:
            plt.close("all")
        except Exception:  # noqa: BLE001 - never fail a run over figures
            pass


def keep_keras_session() -> None:
    """Stop Streamlit from clearing the Keras session after every script run.

    Streamlit 1.67 calls ``keras.backend.clear_session()`` when any script run ends
    (``script_runner._clean_problem_modules``). That also empties TensorFlow's kernel
    cache and runs a full garbage collection: measured here, the clear itself holds
    Python for ~250 ms and the next model call takes 540-730 ms instead of 30, the next
    MTCNN detection up to 1 s instead of 250. The Live page refreshes its figures every
    couple of seconds, so every refresh stalled the video. The app builds its models
    once (``st.cache_resource``) and never in a script run, so there is nothing to clear.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if not hasattr(script_runner, "_clean_problem_modules"):
        _log.warning("streamlit has no _clean_problem_modules any more; leaving its clean-up alone")
        return
    if script_runner._clean_problem_modules is not _close_pyplot_figures:
        STREAMLIT_CLEAN_UP[:] = [script_runner._clean_problem_modules]
        script_runner._clean_problem_modules = _close_pyplot_figures


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Hand memory malloc holds but no longer uses back to the system (glibc's ``malloc_trim(0)``).

    Each session's script runs on its own thread, and glibc gives busy threads their own
    malloc arenas, which keep what an analysis freed. Called after each new photo is
    analysed; True when memory was returned.
    """
    return bool(_TRIM(0)) if _TRIM is not None else False


def run_through_navigation() -> None:
    """Run a page that Streamlit started on its own through app.py's ``st.navigation`` instead.

    Until some session has called ``st.navigation``, Streamlit 1.67 treats the ``pages/``
    folder as old-style pages: a link to a page, as the server's first request, runs that
    page's file alone, without app.py (no page config, no sidebar note, no
    :func:`keep_keras_session`, old-style navigation). Every page calls this first: it
    switches that mode off and runs app.py in its place, whose ``st.navigation`` (URL paths
    are the file names) runs the same page again, properly, in the same script run, so
    nothing the visitor did is lost; then it stops the page's own run.
    """
    import runpy

    import streamlit as st

    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old-style mode
        return
    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    from model import settings

    PagesManager.uses_pages_directory = False
    runpy.run_path(str(settings.PROJECT_ROOT / "app.py"), run_name="__main__")
    st.stop()
