"""Dataset explorer: who is in the training data, and how unevenly."""

import streamlit as st

from model import settings
from ui import dataset, dataset_charts, runtime, state, widgets

runtime.run_through_navigation()  # a linked page as the server's first request: see ui.runtime

widgets.page_header(
    "Dataset explorer",
    "The model learned mostly from UTKFace: about 20,000 face crops labelled with age, gender and one of five "
    "coarse ethnicity categories (plus CelebA photos for gender and East Asian adults for age). Imbalances here "
    "become accuracy gaps on the Model page.",
)
card = state.model_card()
with st.sidebar:
    st.subheader("Data source")
    choices = ["card", "folder"]
    start = 1 if dataset.folder_given_explicitly() or card is None else 0
    source = st.radio("Show", choices, index=start, key="explorer_source", format_func={
        "card": "Training data of the shipped model", "folder": "A UTKFace folder on this machine"}.get)
    public = settings.public_mode()  # strangers may not browse the server's folders
    default_folder = dataset.dataset_folder_default()
    folder = st.text_input("UTKFace folder", default_folder, key="explorer_dir",
                           disabled=source != "folder" or public,
                           help="Fixed by UTKFACE_DIR on this public server." if public
                           else "A folder of [age]_[gender]_[race]_[date].jpg files.")
    if public:
        folder = default_folder

frame = None
if source == "folder":
    summary, frame = dataset.indexed_folder(folder)
else:
    summary = card.data if card is not None else None
    if not summary:
        st.info("No model card with a data summary was found. Choose a UTKFace folder in the sidebar.")
        st.stop()
    st.caption(f"Statistics of the {summary.get('n', 0):,} UTKFace faces behind the shipped model (from its model card).")
    if summary.get("sources"):
        st.caption("It learned from these sources at once; each head learns only from the labels a source has "
                   "(aligned faces: those the app's detector found).")
        st.dataframe(dataset_charts.sources_table(summary["sources"]), hide_index=True, key="table_sources")

dataset.dataset_headline(summary)
bins = st.slider("Age bin width (years)", 1, 20, 5, key="explorer_bins")
st.plotly_chart(dataset_charts.age_histogram(summary["age_counts"], bins), key="chart_age_hist")
left, right = st.columns(2)
left.plotly_chart(dataset_charts.category_bar(summary["gender_counts"], "gender"), key="chart_gender")
right.plotly_chart(dataset_charts.category_bar(summary["ethnicity_counts"], "ethnicity"), key="chart_ethnicity")
left, right = st.columns(2)
with left:
    if frame is not None:
        kind = st.segmented_control("Plot", ["box", "violin"], default="box", key="explorer_kind") or "box"
        st.plotly_chart(dataset_charts.age_by_ethnicity(frame, kind), key="chart_age_by_ethnicity")
    else:
        st.plotly_chart(dataset_charts.age_group_by_ethnicity(summary), key="chart_age_by_ethnicity")
right.plotly_chart(dataset_charts.gender_ethnicity_heatmap(summary), key="chart_gender_ethnicity")
left, right = st.columns(2)
with left:
    st.subheader("Imbalance")
    st.caption("Largest over smallest class; 1.0 is balanced. The model page shows what this costs.")
    st.dataframe(dataset_charts.imbalance_table(summary), hide_index=True, key="table_imbalance")
with right:
    st.subheader("Data quality")
    st.caption("What the data layer skipped or merged before training (the file names carry the labels).")
    st.dataframe(dataset_charts.quality_table(summary.get("quality") or {}), hide_index=True, key="table_quality")
if frame is not None:
    dataset.sample_grid(frame)
else:
    st.caption("Choose a UTKFace folder in the sidebar to browse sample faces and per-face age plots.")
