"""The app's user interface: everything that imports Streamlit or Plotly, besides app.py and pages/.

* ``state``: the cached analyzer (or a test's fake) and each session's analysed photos.
* ``widgets``: Streamlit blocks the pages are made of (inputs return plain values).
* ``photos``: what the app does with a photo, minus Streamlit (outcome, boxes, texts, tables).
* ``charts``: Plotly figures of a face and of the model card.
* ``dataset``, ``dataset_charts``: the Dataset explorer's Streamlit blocks, figures and tables.

The import graph points one way: pages -> ui -> model, training.
"""
