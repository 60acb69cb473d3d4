"""facelens: age, gender and ethnicity estimation from face photos, with Grad-CAM.

    streamlit run app.py

The entry point only sets up the page and the navigation; each page is a short
script in pages/ and the Streamlit blocks live in ui/, the logic in model/ and training/.
"""

import streamlit as st

from model import settings
from ui import runtime, widgets

runtime.keep_keras_session()  # a cleared Keras session makes the next model call ~20x slower

# The favicon is a file the app serves itself: a ":material/...:" page icon makes every visitor's
# browser fetch an SVG from fonts.gstatic.com (icons inside the page come from Streamlit's bundled font).
st.set_page_config(page_title="facelens", page_icon=str(settings.ASSETS_DIR / "favicon.png"), layout="wide",
                   menu_items={"About": "facelens: a MobileNetV2 with three heads trained on UTKFace, CelebA and East Asian adults."})

# The default page is served at "/" and never at its own url_path (Streamlit shows "Page not found"
# there), so that path is one nobody types; the names people do type or bookmark, "/analyze" and
# "/home", get hidden pages that switch to it.
home = st.Page("pages/analyze.py", title="Analyze", icon=":material/photo_camera:", url_path="analyze-photo", default=True)
pages = [
    home,
    st.Page("pages/live.py", title="Live", icon=":material/videocam:", url_path="live"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:", url_path="explain"),
    st.Page("pages/dataset.py", title="Dataset explorer", icon=":material/bar_chart:", url_path="dataset"),
    st.Page("pages/model_card.py", title="Model", icon=":material/model_training:", url_path="model_card"),
    *(st.Page(lambda: st.switch_page(home), title="Analyze", url_path=alias, visibility="hidden")
      for alias in ("analyze", "home")),
]
page = st.navigation(pages)
widgets.sidebar_footer()  # before the page: pages end early with st.stop() when they have nothing to show
page.run()
