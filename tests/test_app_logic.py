"""Unit tests of the app's logic modules: ui.photos, ui.charts, ui.dataset_charts, training.explorer,
and the session store of ui.state."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from model import settings
from model.card import ModelCard, read_card
from tests.app_support import FakeAnalyzer, blank_bytes, portrait_bytes, write_model_card
from training import explorer
from ui import charts, dataset_charts, photos, state


def test_analyze_bytes_outcomes():
    fake = FakeAnalyzer(faces=2)
    ok = photos.analyze_bytes(fake, "a.png", portrait_bytes())
    assert ok.ok and len(ok.faces) == 2 and ok.photo.shape == (512, 512, 3)
    assert photos.analyze_bytes(fake, "b.png", blank_bytes()).status == "no_face"
    assert photos.analyze_bytes(fake, "c.png", b"GIF89a broken").status == "unreadable"
    big = photos.analyze_bytes(fake, "d.png", b"0" * (photos.MAX_UPLOAD_BYTES + 1))
    assert big.status == "too_large" and big.photo is None
    fake.faces = settings.MAX_FACES + 5
    crowd = photos.analyze_bytes(fake, "e.png", portrait_bytes())  # not refused: the largest faces are shown
    assert crowd.ok and len(crowd.faces) == settings.MAX_FACES and crowd.faces_found == settings.MAX_FACES + 5
    assert crowd.notes == [f"e.png: showing {settings.MAX_FACES} of {settings.MAX_FACES + 5} faces, the "
                           f"{settings.MAX_FACES} largest."]
    assert ok.notes == []


def test_unexpected_errors_become_a_message(caplog):
    class Broken(FakeAnalyzer):
        def analyze_photo(self, image, *, largest=None):
            raise RuntimeError("{boom}")

    outcome = photos.analyze_bytes(Broken(), "x.png", portrait_bytes())
    assert outcome.status == "error" and "x.png" in outcome.message and "RuntimeError" in outcome.message
    assert "photo analysis failed" in caplog.text


def test_sample_photo_is_the_astronaut_png():
    data = photos.sample_photo_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert photos.analyze_bytes(FakeAnalyzer(), photos.SAMPLE_NAME, data).photo.shape == (512, 512, 3)


def test_tables_and_json_cover_every_face():
    fake = FakeAnalyzer(faces=3)
    analyses = [photos.analyze_bytes(fake, "a.png", portrait_bytes()),
                photos.analyze_bytes(fake, "b.png", blank_bytes())]
    frame = photos.faces_frame(analyses)
    assert list(frame.columns) == list(photos.TABLE_COLUMNS)
    assert list(frame["face"]) == [1, 2, 3] and set(frame["photo"]) == {"a.png"}
    assert frame["ethnicity_probability"].between(0, 1).all()
    csv_rows = photos.faces_csv(analyses).strip().splitlines()
    assert len(csv_rows) == 4
    payload = json.loads(photos.faces_json(analyses))
    assert [p["status"] for p in payload] == ["ok", "no_face"]
    assert len(payload[0]["faces"]) == 3 and "face_input" not in payload[0]["faces"][0]
    assert photos.faces_frame([]).empty


def test_annotate_draws_coloured_boxes_on_a_copy():
    fake = FakeAnalyzer(faces=2)
    photo = np.full((300, 400, 3), 255, np.uint8)
    photo[::7] = 0  # not flat, so the fake finds faces
    faces = fake.analyze(photo)
    drawn = photos.annotate(photo, faces)
    assert drawn.shape == photo.shape and not np.array_equal(drawn, photo)
    assert photo[::7].max() == 0  # input untouched
    x, y, w, h = faces[1].box
    assert tuple(drawn[y + h // 2, x]) == photos.box_colour(1)


def test_crop_box_clips_to_the_image():
    image = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3)
    assert photos.crop_box(image, (0, 0, 20, 20), margin=0.5).shape[:2] == (30, 30)
    assert photos.crop_box(image, (70, 90, 20, 20), margin=0.5).shape[:2] == (20, 20)


def test_model_card_loading(tmp_path):
    assert read_card(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_card(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_card(tmp_path / "list.json") is None
    assert read_card(write_model_card(tmp_path / "card.json")).test_metrics["n"] == 200


def test_model_card_round_trips_the_shipped_card_and_unknown_keys(tmp_path):
    shipped = settings.DEFAULT_MODEL_CARD_PATH
    card = read_card(shipped)
    assert card.flip_tta is True and card.test_metrics["n"] > 0 and card.extra == {}
    assert card.to_dict() == json.loads(shipped.read_text())
    # it describes the shipped weights (a model file replaced without its export would not)
    assert card.describes(settings.DEFAULT_MODEL_PATH) is True
    (tmp_path / "newer.json").write_text(json.dumps({"name": "m", "fairness_audit": {"t": 1.2}}))
    newer = read_card(tmp_path / "newer.json")
    assert (newer.name, newer.extra) == ("m", {"fairness_audit": {"t": 1.2}})
    assert json.loads(newer.write(tmp_path / "again.json").read_text())["fairness_audit"] == {"t": 1.2}


def test_gender_note_quotes_the_cards_accuracy_for_hard_age_groups(tmp_path):
    card = read_card(write_model_card(tmp_path / "card.json"))
    assert card.gender_accuracy_at("0-2") == (0.48, 40)
    assert card.gender_accuracy_at("0-2", min_faces=41) is None  # too few faces to quote
    assert card.gender_accuracy_at("no such group") is None
    baby, child = photos.gender_age_note(card, "0-2"), photos.gender_age_note(card, "3-9")
    assert "40 held-out faces aged 0-2" in baby and "48%" in baby and "coin flip" in baby
    assert "70%" in child and "often wrong" in child
    assert photos.gender_age_note(card, "20-29") is None  # 93% is above settings.GENDER_NOTE_BELOW
    assert photos.gender_age_note(None, "0-2") is None
    del card.test_metrics["by_age_group"]  # cards exported before the breakdown say nothing
    assert photos.gender_age_note(card, "0-2") is None


def test_map_trust_note_quotes_the_served_models_own_occlusion_study(tmp_path):
    card = read_card(write_model_card(tmp_path / "card.json"))
    checks = card.map_checks("gradcam", "age")
    assert [(c.faces_label, c.faces, c.t_stat) for c in checks] == [("200 UTKFace faces", 200, 2.9),
                                                                   ("100 LFW faces", 100, -2.2)]  # largest first
    age = photos.map_trust_note(card, "gradcam", "age")
    assert "by 2.3 against 1.5 years on 200 UTKFace faces (it points at what matters, t = 2.9)" in age
    assert "by 10.9 against 11.3 years on 100 LFW faces (random patches mattered more, t = -2.2)" in age
    assert "Prefer" not in age and "hint" not in age  # trusted on the larger set
    gender = photos.map_trust_note(card, "gradcam", "gender")
    assert "moved the probability by 5.0 against 2.0 points on 200 UTKFace faces" in gender
    score_age = photos.map_trust_note(card, "scorecam", "age")
    assert "random patches mattered more" in score_age and score_age.endswith("Prefer Grad-CAM for this head.")
    unchecked = photos.map_trust_note(card, "gradcam++", "ethnicity")
    assert "not checked" in unchecked and "hints" in unchecked
    assert photos.map_trust_note(None, "gradcam", "age") == unchecked
    card.faithfulness["sets"]["utkface"]["results"]["gradcam"]["age"]["t"] = 1.2  # weak, and no better method
    assert photos.map_trust_note(card, "gradcam", "age").endswith("(no clearer than chance, t = 1.2), and by 10.9 "
                                                                 "against 11.3 years on 100 LFW faces (random patches "
                                                                 "mattered more, t = -2.2). Read it as a hint.")
    card.faithfulness["sets"]["utkface"]["results"]["gradcam"]["age"]["drop_hot"] = -0.04
    assert "by 0.0 against 1.5 years" in photos.map_trust_note(card, "gradcam", "age")  # not "-0.0"
    card.faithfulness["sets"]["utkface"]["results"]["gradcam"]["age"]["t"] = None  # below two faces
    assert "t = nan" in photos.map_trust_note(card, "gradcam", "age")
    card.faithfulness = {}
    assert "faithfulness" not in card.to_dict()  # cards without a study keep their shape


def test_build_analyzer_explains_a_missing_model(tmp_path):
    with pytest.raises(state.ModelMissingError, match="FACELENS_MODEL"):
        state.build_analyzer(tmp_path / "absent.keras")


def test_model_card_charts(tmp_path):
    card = read_card(write_model_card(tmp_path / "card.json"))
    test = card.test_metrics
    assert [label for label, _, _ in charts.headline_metrics(card)][0] == "Age MAE"
    mae = charts.mae_by_age_group(test)
    assert len(mae.data) == 2 and list(mae.data[0].x)[0] == "0-2"
    table = charts.per_class_table(test["ethnicity"])
    assert list(table["class"]) == ["White", "Black", "Asian", "Indian", "Other"]
    assert len(charts.training_curves(card.training["history"]).data) == 8
    assert charts.confusion_matrix({}, "empty").data == ()
    calibration = charts.calibration(test)
    assert [float(v) for v in calibration.data[1].y] == [0.78]


def test_ethnicity_bars_keep_label_order_and_widths():
    import re

    html = charts.ethnicity_bars_html({"other": 0.1, "white": 0.604, "black": 0.05, "asian": 0.2, "indian": 0.046})
    assert re.findall(r"<span style='width:4.5rem;font-size:0.9rem'>(\w+)</span>", html) == [
        "White", "Black", "Asian", "Indian", "Other"]
    assert re.findall(r"width:([\d.]+)%", html) == ["60.4", "5.0", "20.0", "4.6", "10.0"]
    assert "title='White: 60.4%'" in html and ">60%</span>" in html
    assert "http" not in html  # nothing for the browser to fetch


def test_age_histogram_rebins_counts():
    counts = {"1": 2, "4": 3, "5": 1, "12": 4}
    fig = dataset_charts.age_histogram(counts, bin_width=5)
    assert [int(v) for v in fig.data[0].y] == [5, 1, 4]
    assert sum(int(v) for v in dataset_charts.age_histogram(counts, bin_width=1).data[0].y) == 10
    assert dataset_charts.age_histogram({}, 5).data == ()


def test_imbalance_and_quality_tables(tmp_path):
    summary = read_card(write_model_card(tmp_path / "card.json")).data
    imbalance = dataset_charts.imbalance_table(summary).set_index("attribute")
    assert imbalance.loc["ethnicity", "ratio"] == 6.0
    assert imbalance.loc["ethnicity", "smallest class"] == "Other (70)"
    quality = dataset_charts.quality_table(summary["quality"]).set_index("check")["count"]
    assert quality["identical images with conflicting labels"] == 1
    assert dataset_charts.imbalance_table({}).empty


def test_index_folder_and_filters(utkface_dir):
    summary, frame = explorer.index_folder(utkface_dir)
    assert summary["n"] == len(frame) == 48
    assert set(frame["gender"]) <= {"male", "female"}
    picked = explorer.filter_samples(frame, ["female"], ["white", "asian"], (10, 60), limit=5, seed=1)
    assert len(picked) <= 5 and set(picked["gender"]) <= {"female"}
    assert picked["age"].between(10, 60).all() and set(picked["ethnicity"]) <= {"white", "asian"}
    assert explorer.filter_samples(frame, limit=100).shape[0] == 48
    thumb = explorer.thumbnail(frame["path"].iloc[0], size=50)
    assert thumb.shape == (50, 50, 3) and thumb.dtype == np.uint8


def test_thumbnail_of_a_broken_file_is_none(tmp_path):
    (tmp_path / "1_0_0_1.jpg").write_bytes(b"nope")
    assert explorer.thumbnail(tmp_path / "1_0_0_1.jpg") is None


def test_age_by_ethnicity_box_and_violin():
    frame = pd.DataFrame({"age": [5, 30, 60, 22], "ethnicity": ["white", "white", "black", "other"]})
    assert [t.type for t in dataset_charts.age_by_ethnicity(frame, "box").data] == ["box"] * 3
    assert [t.type for t in dataset_charts.age_by_ethnicity(frame, "violin").data] == ["violin"] * 3


def test_streamlit_config_suits_headless_serving():
    import tomllib

    config = tomllib.loads((settings.PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == settings.MAX_UPLOAD_MB
    assert config["server"]["headless"] is True
    assert config["browser"]["gatherUsageStats"] is False


def test_display_copies_are_shrunk_and_ages_read_well():
    big = np.zeros((4000, 3000, 3), np.uint8)
    assert photos.for_display(big).shape == (photos.DISPLAY_MAX_SIDE, photos.DISPLAY_MAX_SIDE * 3 // 4, 3)
    small = np.zeros((10, 20, 3), np.uint8)
    assert photos.for_display(small) is small
    assert [photos.age_text(a) for a in (0.6, 1.2, 34.5)] == ["1 year", "1 year", "34 years"]


def test_session_store_keeps_the_newest_photos_within_budget(monkeypatch):
    from collections import OrderedDict


    def photo(size: int) -> photos.PhotoAnalysis:
        return photos.PhotoAnalysis(str(size), str(size), "ok", data=b"x" * size, display=b"y" * size)

    store = OrderedDict((str(i), photo(10)) for i in range(state.MAX_KEPT_PHOTOS + 3))
    state._evict(store, keep=1)
    assert list(store) == [str(i) for i in range(3, state.MAX_KEPT_PHOTOS + 3)]
    assert store["3"].kept_bytes == 20
    monkeypatch.setattr(state, "MAX_KEPT_BYTES", 100)
    state._evict(store, keep=2)
    assert list(store) == [str(i) for i in range(state.MAX_KEPT_PHOTOS - 2, state.MAX_KEPT_PHOTOS + 3)]  # 5 x 20 bytes
    monkeypatch.setattr(state, "MAX_KEPT_BYTES", 10)
    state._evict(store, keep=2)
    assert len(store) == 2  # over the budget, but the photos on screen stay


def test_an_analysed_photo_keeps_its_upload_and_screen_images_not_its_pixels():
    """Per session the app keeps the compressed upload, the annotated photo and the thumbnails as
    JPEG at screen size; the pixels are decoded again only when asked for (Grad-CAM, Explain)."""
    from PIL import Image

    data = portrait_bytes("JPEG")
    outcome = photos.analyze_bytes(FakeAnalyzer(faces=2), "a.jpg", data)
    assert outcome.data == data and outcome.shape == (512, 512, 3)
    assert "photo" not in vars(outcome)  # no decoded array is stored
    assert Image.open(io.BytesIO(outcome.display)).size == (512, 512)
    assert sorted(outcome.thumbs) == [0, 1]
    assert all(max(Image.open(io.BytesIO(t)).size) <= photos.THUMB_MAX_SIDE for t in outcome.thumbs.values())
    np.testing.assert_array_equal(outcome.photo, photos.image_io.load_image(data))
    assert outcome.kept_bytes == (len(data) + len(outcome.display) + sum(map(len, outcome.thumbs.values()))
                                  + 2 * 128 * 128 * 3) < outcome.photo.nbytes / 2
    blank = photos.analyze_bytes(FakeAnalyzer(), "b.png", blank_bytes())
    assert blank.status == "no_face" and blank.data == b"" and blank.photo is None and blank.kept_bytes == 0


def test_card_details_are_rows_not_json(tmp_path):
    card = read_card(write_model_card(tmp_path / "card.json"))
    card.training["config"] = {"epochs": 24, "lr": 3e-4, "data_dir": "/private/path", "hair_occlusion": 0.25,
                               "hair_occlusion_min_age": 18.0}
    details = charts.card_details(card).set_index("field")["value"]
    assert details["name"] == "test_model" and details["train / val / test faces"] == "800 / 100 / 100"
    assert details["training epochs"] == "24" and "training data dir" not in details
    assert details["training hair occlusion"] == "0.25" and details["training hair occlusion min age"] == "18.0"
    assert charts.card_details(ModelCard()).shape[0] == 6


def test_gender_text_says_unsure_for_a_coin_flip():
    assert photos.gender_text("male", 0.54) == ("Unsure", "leans male (54%); the model cannot tell")
    assert photos.gender_text("female", 0.93) == ("Female", "probability 93%")
    assert photos.gender_text("female", settings.GENDER_UNSURE_BELOW)[0] == "Female"



def test_freed_memory_is_handed_back_once_per_new_photo(monkeypatch):
    import sys

    from tests.app_support import open_page, serving
    from ui import runtime

    if sys.platform.startswith("linux"):
        assert runtime._TRIM is not None and runtime._TRIM(0) in (0, 1)  # glibc's malloc_trim, really called
    calls = []
    monkeypatch.setattr(runtime, "release_free_memory", lambda: calls.append(1) or True)
    with serving(FakeAnalyzer()):
        at = open_page()
        at.file_uploader(key="analyze_upload").set_value([("a.png", portrait_bytes(), "image/png")]).run()
        assert at.metric and calls == [1]
        at.run()  # a rerun reuses the result: nothing new was freed
        assert calls == [1]
