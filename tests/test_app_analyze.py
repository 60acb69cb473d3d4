"""AppTest of the Analyze page (the landing page) with a fake analyzer, plus one
run of the real pipeline (untrained model unless the shipped one is present)."""

from __future__ import annotations

import io
import json

import pytest
from streamlit.testing.v1 import AppTest

from model import settings
from tests.app_support import APP_PATH, RUN_TIMEOUT, FakeAnalyzer, blank_bytes, portrait_bytes, write_model_card
from ui import photos, state


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(write_model_card(tmp_path / "card.json")))
    analyzer = FakeAnalyzer(faces=1)
    state.set_analyzer_override(analyzer)
    yield analyzer
    state.set_analyzer_override(None)


def _app() -> AppTest:
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)
    at.run()
    assert not at.exception
    return at


def _upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="analyze_upload").set_value(list(files)).run()
    assert not at.exception
    return at


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_landing_page_invites_an_upload(fake):
    at = _app()
    assert at.title[0].value == "Analyze a photo"
    assert at.file_uploader(key="analyze_upload").accept_multiple_files
    assert any("Try a sample photo" in text for text in _texts(at.info))
    assert not at.metric


def test_face_card_notes_when_gender_is_hard_to_read_at_that_age(fake, monkeypatch, tmp_path):
    at = _app()
    at.button(key="analyze_sample").click().run()
    assert not any("hard to read" in c.value for c in at.caption)  # the fake face is 20: 93% on the card
    card = write_model_card(tmp_path / "young.json")
    data = json.loads(card.read_text())
    data["test_metrics"]["by_age_group"]["20-29"]["gender_accuracy"] = 0.55
    card.write_text(json.dumps(data))
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(card))
    at.run()
    notes = [c.value for c in at.caption if "hard to read" in c.value]
    assert len(notes) == 1 and "40 held-out faces aged 20-29" in notes[0] and "55%" in notes[0]
    assert "coin flip" in notes[0]


def test_how_it_works_names_the_served_models_input_size(fake):
    """The fake serves 128 px crops while the shipped model takes 160: the text follows the analyzer."""
    at = _app()
    text = " ".join(m.value for m in at.expander[0].markdown)
    assert f"{fake.input_size} x {fake.input_size} pixels" in text
    assert fake.input_size != settings.INPUT_SIZE


def test_sample_photo_gives_a_face_card(fake):
    at = _app()
    at.button(key="analyze_sample").click().run()
    assert not at.exception and not at.error
    labels = [m.label for m in at.metric]
    assert labels == ["Estimated age", "Gender"]
    assert at.metric[0].value == "20 years"
    assert at.metric[1].value == "Male"
    captions = " ".join(_texts(at.caption))
    assert "80% interval 15-26 years" in captions and "age group 20-29" in captions
    assert "Detection confidence 99.0%" in captions
    assert "sample_astronaut.png: 1 face" in at.get("image")[0].captions
    (bars,) = [m.value for m in at.markdown if "facelens-ethnicity" in m.value]
    assert [label in bars for label in ("White", "Black", "Asian", "Indian", "Other")] == [True] * 5
    assert "width:80.0%" in bars  # the fake's first face: 80% white
    assert not at.get("plotly_chart")  # no Plotly figure per card


def test_a_face_unlike_the_training_photos_is_flagged_on_its_card(fake):
    at = _app()
    at.button(key="analyze_sample").click().run()
    assert not any("Unlike the photos" in w.value for w in at.warning)  # an ordinary face: no warning
    fake.unfamiliar = True
    at = _app()  # a new session: the first analysis of the photo is kept per session
    at.button(key="analyze_sample").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning if "Unlike the photos this model learned from" in w.value]
    assert len(warnings) == 1 and "Unfamiliarity 2.5" in warnings[0]


def test_grad_cam_switch_shows_an_overlay_per_head(fake):
    at = _app()
    at.button(key="analyze_sample").click().run()
    images_before = len(at.get("image"))
    assert not fake.explain_calls
    toggle = next(t for t in at.toggle if t.key.startswith("cam_"))
    toggle.set_value(True).run()
    assert not at.exception and not at.error
    assert len(at.get("image")) == images_before  # the overlay takes the thumbnail's place
    assert fake.explain_calls[-1][:2] == (0, "age")
    assert any("Grad-CAM for age" in c for image in at.get("image") for c in image.captions)
    head = next(w for w in at.get("button_group") if w.key.startswith("camhead_"))
    head.set_value("ethnicity").run()
    assert fake.explain_calls[-1][:2] == (0, "ethnicity")
    assert any("Grad-CAM for ethnicity" in c for image in at.get("image") for c in image.captions)


def test_several_photos_give_a_table_and_downloads(fake):
    fake.faces = 2
    at = _upload(_app(), ("one.png", portrait_bytes(), "image/png"), ("two.jpg", portrait_bytes("JPEG"), "image/jpeg"))
    assert not at.error
    table = at.dataframe[0].value
    assert len(table) == 4 and list(table["photo"]) == ["one.png", "one.png", "two.jpg", "two.jpg"]
    assert list(table["face"]) == [1, 2, 1, 2]
    assert [m.label for m in at.metric].count("Estimated age") == 4
    assert [t.label for t in at.tabs] == ["one.png", "two.jpg"]
    downloads = {b.proto.label for b in at.get("download_button")}
    assert downloads == {"Download CSV", "Download JSON"}


@pytest.mark.parametrize(
    ("name", "data", "expected", "kind"),
    [
        ("junk.jpg", b"this is not an image", "Could not read junk.jpg", "error"),
        ("empty.png", b"", "Could not read empty.png: the file is empty", "error"),
        ("huge.png", b"\0" * (settings.MAX_UPLOAD_MB * 1024 * 1024 + 1), f"the limit is {settings.MAX_UPLOAD_MB} MB",
         "error"),
        ("wide.png", "wide", "the image is too large", "error"),
        ("wall.png", None, "No face found in wall.png", "warning"),
    ],
)
def test_bad_uploads_give_clear_messages(fake, name, data, expected, kind):
    if data == "wide":  # a few hundred bytes, but more pixels per side than the app decodes
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("1", (settings.MAX_IMAGE_SIDE + 1, 8)).save(buffer, format="PNG")
        data = buffer.getvalue()
    data = blank_bytes() if data is None else data
    at = _upload(_app(), (name, data, "image/png"))
    messages = _texts(at.error if kind == "error" else at.warning)
    assert len(messages) == 1 and expected in messages[0], messages
    assert not at.metric


def test_a_crowd_shows_its_largest_faces_and_says_how_many_there_are(fake):
    fake.faces = 25
    at = _upload(_app(), ("crowd.png", portrait_bytes(), "image/png"))
    assert not at.warning and not at.error
    note = f"showing {settings.MAX_FACES} of 25 faces, the {settings.MAX_FACES} largest"
    assert _texts(at.info) == [f"crowd.png: {note}."]
    assert at.get("image")[0].captions == [f"crowd.png: {settings.MAX_FACES} faces"]  # said once, in the note
    assert not any("of 25" in t for t in _texts(at.caption) + _texts(at.markdown))
    assert [m.label for m in at.metric].count("Estimated age") == settings.MAX_FACES
    fake.faces = 1
    at = _upload(at, ("crowd.png", portrait_bytes(), "image/png"), ("ok.png", portrait_bytes("BMP"), "image/bmp"))
    assert len(at.info) == 1  # the crowd's result is remembered; the other photo gets its card too
    assert [m.label for m in at.metric].count("Estimated age") == settings.MAX_FACES + 1


def test_a_gif_says_which_frame_was_analysed(fake):
    from PIL import Image

    face = Image.open(io.BytesIO(portrait_bytes())).convert("RGB")
    flat = Image.new("RGB", face.size, (128, 128, 128))
    late, early = io.BytesIO(), io.BytesIO()
    flat.save(late, format="GIF", save_all=True, append_images=[face])
    face.save(early, format="GIF", save_all=True, append_images=[flat])
    at = _upload(_app(), ("late.gif", late.getvalue(), "image/gif"))
    assert _texts(at.warning) == [
        "No face found in late.gif (the file has 2 frames; only frame 1 was analysed). Faces should "
        f"be at least {settings.MIN_FACE_SIZE} px wide, roughly frontal and well lit."]
    at = _upload(_app(), ("early.gif", early.getvalue(), "image/gif"))
    assert _texts(at.info) == ["early.gif: the file has 2 frames; only frame 1 was analysed."]
    assert at.get("image")[0].captions == ["early.gif: 1 face"]


def test_camera_photo_is_analysed(fake):
    at = _app()
    at.toggle(key="analyze_camera_on").set_value(True).run()
    at.camera_input(key="analyze_camera").set_value(("shot.jpg", portrait_bytes("JPEG"), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert "camera.jpg: 1 face" in at.get("image")[0].captions


def test_missing_model_file_is_explained(monkeypatch, tmp_path):
    state.set_analyzer_override(None)
    monkeypatch.setenv("FACELENS_MODEL", str(tmp_path / "absent.keras"))
    at = _app()
    assert len(at.error) == 1 and "No model file" in at.error[0].value
    assert not at.file_uploader


@pytest.mark.slow
def test_real_pipeline_on_the_sample_photo(monkeypatch, tmp_path, untrained_model_path):
    """MTCNN + alignment + the network (untrained unless the shipped model exists): a card appears."""
    state.set_analyzer_override(None)
    if not settings.DEFAULT_MODEL_PATH.is_file():
        monkeypatch.setenv("FACELENS_MODEL", str(untrained_model_path))
    monkeypatch.setenv("FACELENS_MODEL_CARD", str(write_model_card(tmp_path / "card.json")))
    at = AppTest.from_file(APP_PATH, default_timeout=600)
    at.run()
    at.button(key="analyze_sample").click().run()
    assert not at.exception and not at.error and not at.warning
    assert [m.label for m in at.metric] == ["Estimated age", "Gender"]
    assert at.metric[0].value.endswith(" years")


def test_sample_button_without_scikit_image_explains_itself(fake, monkeypatch):
    def missing():
        raise ImportError("No module named 'skimage'")

    monkeypatch.setattr(photos, "sample_photo_bytes", missing)
    at = _app()
    at.button(key="analyze_sample").click().run()
    assert not at.exception
    assert "scikit-image" in at.error[0].value and not at.metric


def test_the_uploader_lets_every_file_through_so_its_refusal_shows_on_the_page(fake):
    """A file type the browser would refuse (a red chip, its reason only on hover) reaches the
    app instead, which says on the page why it cannot read it and which formats it reads."""
    at = _app()
    uploader = at.file_uploader(key="analyze_upload")
    assert list(uploader.proto.type) == []  # no client-side type filter
    assert any(photos.UPLOAD_TYPE_NAMES in c.value and f"{settings.MAX_UPLOAD_MB} MB" in c.value for c in at.caption)
    at = _upload(at, ("scan.pdf", b"%PDF-1.4 not a photo", "application/pdf"))
    (message,) = _texts(at.error)
    assert message.startswith("Could not read scan.pdf: the file is not an image") and photos.UPLOAD_TYPE_NAMES in message
