"""Analyze: upload photos (or take one, or try the sample) and see a card per face."""

import streamlit as st

from ui import runtime, state, widgets

runtime.run_through_navigation()  # a linked page as the server's first request: see ui.runtime

widgets.page_header(
    "Analyze a photo",
    "Upload a selfie or a group photo. Each face is found, aligned and passed through one network with "
    "three heads: age, gender and ethnicity. Estimates, not facts.",
)
analyzer = state.get_analyzer()
sources = widgets.photo_sources("analyze")
if not sources:
    st.info("Upload a photo, use the camera, or press **Try a sample photo** to see it work.",
            icon=":material/info:")
    widgets.how_it_works(analyzer.input_size)
    st.stop()

analyses = state.analyze_all(analyzer, sources)
widgets.show_problems(analyses)
found = [a for a in analyses if a.ok]
if not found:
    st.stop()

if len(analyses) > 1:
    widgets.faces_summary(found)
if len(found) > 1:
    for tab, analysis in zip(st.tabs([a.name for a in found]), found):
        with tab:
            widgets.photo_result(analysis, analyzer)
else:
    widgets.photo_result(found[0], analyzer)
st.caption(
    "Switch on Grad-CAM on a card to see which pixels drove a prediction, or open the **Explain** page "
    "for all three heads side by side."
)
widgets.how_it_works(analyzer.input_size)
