"""Model: held-out metrics, where the model is weaker, and how to use it responsibly."""

import streamlit as st

from model import settings
from ui import charts, runtime, state, widgets

runtime.run_through_navigation()  # a linked page as the server's first request: see ui.runtime

st.title("The model")
card = state.model_card()
if card is None:
    st.warning(f"No model card at {settings.model_card_path()}. It is written by training "
               "(python -m training.train), next to the model file.", icon=":material/description:")
    st.stop()

if (mismatch := state.card_mismatch()) is not None:
    st.warning(mismatch, icon=":material/warning:")

test = card.test_metrics or {}
st.caption(f"{card.architecture}. Input {card.input.get('size', '?')} px RGB face crops. "
           f"Metrics on the held-out test split ({test.get('n', 0):,} faces, never seen in training or model "
           f"selection){', with horizontal-flip averaging' if card.flip_tta else ''}.")
for column, (label, value, help_text) in zip(st.columns(5), charts.headline_metrics(card)):
    column.metric(label, value, help=help_text)

st.header("Where it is more and less accurate")
left, right = st.columns(2)
left.plotly_chart(charts.mae_by_age_group(test), key="chart_mae_age_group")
right.plotly_chart(charts.mae_by_group(test), key="chart_mae_group")
st.plotly_chart(charts.accuracy_by_group(test), key="chart_accuracy_group")
by_age = charts.accuracy_by_age_group(test)
if by_age is not None:
    st.plotly_chart(by_age, key="chart_accuracy_age_group")
    st.caption("Gender is hardest to read on babies and young children; a face card whose estimated age falls "
               "in a group below "
               f"{settings.GENDER_NOTE_BELOW:.0%} here says so beside its gender call.")

evaluations = charts.evaluations_table(card)
if not evaluations.empty:
    st.header("Off its home data")
    st.caption("Every evaluation the model had, side by side: its home data (UTKFace), people it never saw from "
               "other collections, and the UTKFace test photos degraded as uploads often are. Bias is predicted "
               "minus true age; ECE is the gap between stated confidence and accuracy.")
    st.dataframe(evaluations, hide_index=True, key="table_evaluations", column_config=widgets.EVALUATION_COLUMNS)
    jitter = charts.jitter_table(card)
    if not jitter.empty:
        st.caption("Steadiness: the same validation faces re-framed 8 times (zoom and shift of a few percent, "
                   "small rotations). Spread is the mean per-face standard deviation of the answer; flips and "
                   "changes are the shares of faces whose shown gender call or 9-group age changes between "
                   "re-framings (a less confident network has smaller spreads without changing its calls less). "
                   "Rows marked whole photos re-frame the photo itself, so detection and alignment undo most of "
                   "it, as for an upload: that is how much an answer moves for a user.")
        st.dataframe(jitter, hide_index=True, key="table_jitter")
    hair = charts.hidden_hair_table(card)
    if not hair.empty:
        st.caption("Hair: gender accuracy of adults with the outer 15% of each side of the face crop, or its top "
                   "15%, greyed out, as short or tied-back hair, a hat or a headscarf hide it. A drop for women "
                   "means the model reads long hair as much as the face.")
        st.dataframe(hair, hide_index=True, key="table_hidden_hair", column_config=widgets.HIDDEN_HAIR_COLUMNS)

uncertainty = charts.calibration_table(card)
if not uncertainty.empty:
    fitted = (card.calibration or {}).get("fitted") or {}
    st.header("Knowing when it is out of its depth")
    st.caption(
        "Each face gets an unfamiliarity score: how far its features lie from the training photos' (1 = an ordinary "
        "validation face). The 80% age interval widens with it (its lower and upper sides apart, because off "
        "home adults are read too young more often than too old, and until every validation set is covered at "
        f"least {fitted.get('interval_coverage_floor', 0.78):.0%} of the time), gender and ethnicity probabilities "
        "are tempered with it, and faces above "
        f"{fitted.get('warn_above', float('nan')):.2f} are flagged on their card. The age read-out also divides "
        f"out {fitted.get('age_prior_power', 0):.0%} of the training data's age mix (which pulls older faces "
        "young). Fitted on validation faces only; before = the network's raw read-out, after = what the app shows.")
    st.dataframe(uncertainty, hide_index=True, key="table_calibration", column_config=widgets.CALIBRATION_COLUMNS)

st.header("Confusion matrices")
left, right = st.columns([2, 3])
for column, head in ((left, "gender"), (right, "ethnicity")):
    with column:
        st.plotly_chart(charts.confusion_matrix(test.get(head) or {}, f"{head.capitalize()} (row = true class)"),
                        key=f"chart_confusion_{head}")
        st.dataframe(charts.per_class_table(test.get(head) or {}), hide_index=True, key=f"table_classes_{head}",
                     column_config=widgets.PER_CLASS_COLUMNS)

mix = charts.ethnicity_mix(card)
if mix is not None:
    st.plotly_chart(mix, key="chart_ethnicity_mix")
    st.caption(charts.ethnicity_mix_text(card))

st.header("Calibration")
st.caption("Are the probabilities honest? ECE is the average gap between confidence and accuracy. "
           "The age interval should contain the true age about 80% of the time.")
st.plotly_chart(charts.calibration(test), key="chart_calibration")

st.header("Training")
training = card.training or {}
soup = training.get("soup")
last_run = " for the last training run" if soup else ""
st.caption(f"{training.get('minutes', '?')} minutes{last_run} on {training.get('machine', 'unknown hardware')}.")
if soup:
    st.caption("The shipped weights average several models' weights (a model soup): "
               + "; ".join(f"{w:.0%} {m}" for m, w in zip(soup["models"], soup["weights"]))
               + ". The minutes and the curves are those of the last training run; the README gives the whole chain.")
if training.get("history"):
    st.plotly_chart(charts.training_curves(training["history"]), key="chart_training")

st.header("Limits and responsible use")
st.markdown(
    """
- **Estimates, not facts.** Age is apparent age from one photo; gender and ethnicity are what the labels of the
  training data would most likely say, with a probability. Any of them can be wrong for a given person.
- **Coarse, imposed categories.** Ethnicity uses UTKFace's five categories (White, Black, Asian, Indian, Other),
  assigned by annotators. They do not describe how people identify, and "Other" lumps many groups together.
  Gender is UTKFace's binary label.
- **Uneven accuracy.** The charts above show larger errors for some age groups and categories, mostly those
  with fewer training faces (see the Dataset explorer). Children and older adults are the hardest for age.
- **Do not use it to decide anything about a person**: not for identity, eligibility, access, hiring,
  policing or profiling. It is a teaching demo of a model and its limits.
- Photos you upload are analysed in memory and never stored.
"""
)
st.caption(card.licence)
with st.expander("Model card details"):
    st.dataframe(charts.card_details(card), hide_index=True, key="table_card_details")
