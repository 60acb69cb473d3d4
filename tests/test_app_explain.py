"""AppTest of the Explain page: three heads side by side, method, target and opacity."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import APP_PATH, RUN_TIMEOUT, FakeAnalyzer, open_page, write_model_card
from ui import photos, state

PAGE = "pages/explain.py"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(write_model_card(tmp_path / "card.json")))
    analyzer = FakeAnalyzer(faces=2)
    state.set_analyzer_override(analyzer)
    yield analyzer
    state.set_analyzer_override(None)


def _explain_page() -> AppTest:
    at = open_page(PAGE)
    assert not at.exception
    return at


def test_without_a_photo_it_offers_the_sample(fake):
    at = _explain_page()
    assert at.title[0].value == "Explain a prediction"
    assert "No analysed photo yet" in at.info[0].value
    assert not fake.explain_calls


def test_three_heads_side_by_side_with_downloads(fake):
    at = _explain_page()
    at.button(key="explain_sample").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader if s.value in ("Age", "Gender", "Ethnicity")] == ["Age", "Gender", "Ethnicity"]
    assert sorted(call[1] for call in fake.explain_calls) == ["age", "ethnicity", "gender"]
    assert fake.explain_batches == [("age", "gender", "ethnicity")]  # the three maps in one call
    downloads = [b for b in at.get("download_button") if b.proto.label == "Download overlay (PNG)"]
    assert len(downloads) == 3
    assert at.selectbox(key="explain_target_age").disabled


def test_face_method_target_and_opacity_reach_the_explainer(fake):
    at = _explain_page()
    at.button(key="explain_sample").click().run()
    at.selectbox(key="explain_face").set_value(1).run()
    at.radio(key="explain_method").set_value("gradcam++").run()
    at.slider(key="explain_alpha").set_value(0.8).run()
    at.selectbox(key="explain_target_ethnicity").set_value(2).run()
    assert not at.exception and not at.error
    ethnicity_calls = [c for c in fake.explain_calls if c[1] == "ethnicity"]
    assert ethnicity_calls[-1] == (1, "ethnicity", 2, "gradcam++", 0.8)
    gender_calls = [c for c in fake.explain_calls if c[1] == "gender"]
    assert gender_calls[-1] == (1, "gender", None, "gradcam++", 0.8)
    assert any("asian" in c for c in at.get("image")[-1].captions)


def test_each_map_says_how_far_to_trust_it_from_the_served_models_card(fake):
    at = _explain_page()
    at.button(key="explain_sample").click().run()
    notes = [c.value for c in at.caption if "hottest fifth" in c.value or "not checked" in c.value]
    assert len(notes) == 3  # one per head, from the generated card's study
    assert "200 UTKFace faces (it points at what matters, t = 2.9)" in notes[0]
    assert "moved the probability by 5.0 against 2.0 points" in notes[1]
    assert "not checked" in notes[2]  # the card has no ethnicity check
    at.radio(key="explain_method").set_value("scorecam").run()
    age = next(c.value for c in at.caption if "hottest fifth" in c.value)
    assert "random patches mattered more" in age and "Prefer Grad-CAM" in age
    assert set(at.radio(key="explain_method").options) >= {"Grad-CAM", "Grad-CAM++"}  # labels of the methods


def test_a_failing_heat_map_is_reported_not_raised(fake, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no gradients")

    at = _explain_page()
    at.button(key="explain_sample").click().run()
    monkeypatch.setattr(fake, "explain_heads", broken)
    at.slider(key="explain_alpha").set_value(0.3).run()
    assert not at.exception
    assert len(at.error) == 1 and "no gradients" in at.error[0].value  # one message for the three maps
    assert [s.value for s in at.subheader if s.value in ("Age", "Gender", "Ethnicity")] == ["Age", "Gender", "Ethnicity"]
    assert not [b for b in at.get("download_button") if b.proto.label == "Download overlay (PNG)"]


def test_photos_analysed_on_the_analyze_page_are_offered(fake):
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)
    at.run()
    at.button(key="analyze_sample").click().run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.info
    assert at.selectbox(key="explain_photo").options == [photos.SAMPLE_NAME]
    assert len(at.selectbox(key="explain_face").options) == 2


@pytest.mark.slow
def test_real_grad_cam_for_every_head_and_a_chosen_target(monkeypatch, tmp_path, untrained_model_path):
    """The real analyzer and model.gradcam behind the page (untrained model unless the shipped one exists)."""
    from model import settings

    state.set_analyzer_override(None)
    if not settings.DEFAULT_MODEL_PATH.is_file():
        monkeypatch.setenv("FACELENS_MODEL", str(untrained_model_path))
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(write_model_card(tmp_path / "card.json")))
    at = open_page(PAGE, timeout=600)
    at.button(key="explain_sample").click().run(timeout=600)
    at.selectbox(key="explain_target_ethnicity").set_value(3).run(timeout=600)
    assert not at.exception and not at.error
    captions = [c for image in at.get("image") for c in image.captions]
    assert "Grad-CAM for: indian" in captions
    assert sum("Grad-CAM for:" in c for c in captions) == 3
