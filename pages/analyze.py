"""Analyze: upload photos (or take one, or try the sample) and see a card per face."""

import streamlit as st

from model import ui

ui.page_header(
    "Analyze a photo",
    "Upload a selfie or a group photo. Each face is found, aligned and passed through one network with "
    "three heads: age, gender and ethnicity. Estimates, not facts.",
)
analyzer = ui.get_analyzer()
sources = ui.photo_sources("analyze")
if not sources:
    st.info("Upload a photo, use the camera, or press **Try a sample photo** to see it work.",
            icon=":material/info:")
    ui.how_it_works()
    st.stop()

analyses = ui.analyze_all(analyzer, sources)
ui.show_problems(analyses)
found = [a for a in analyses if a.ok]
if not found:
    st.stop()

if len(analyses) > 1:
    ui.faces_summary(found)
if len(found) > 1:
    for tab, analysis in zip(st.tabs([a.name for a in found]), found):
        with tab:
            ui.photo_result(analysis, analyzer)
else:
    ui.photo_result(found[0], analyzer)
st.caption(
    "Switch on Grad-CAM on a card to see which pixels drove a prediction, or open the **Explain** page "
    "for all three heads side by side."
)
ui.how_it_works()
