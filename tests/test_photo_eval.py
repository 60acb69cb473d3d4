"""Evaluation on whole photos (the analyzer's path) and the robustness studies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.settings import PROJECT_ROOT
from training.photo_eval import label_group, photo_report
from training.sources import FaceRecord


def _record(**labels) -> FaceRecord:
    return FaceRecord("s", "x.jpg", Path("x.jpg"), "d", **labels)


def _result(age: float, gender: str, p_gender: float, ethnicity: str = "white") -> dict:
    return {"age": age, "age_interval": [age - 5, age + 5], "gender": gender,
            "gender_probability": p_gender, "ethnicity": ethnicity}


def test_label_group_uses_exact_ages_and_ranges_that_fit_one_group():
    assert label_group(_record(age=34, age_low=34, age_high=34)) == 4
    assert label_group(_record(age_low=30, age_high=39)) == 4
    assert label_group(_record(age_low=70, age_high=116)) == 8
    assert label_group(_record(age_low=25, age_high=34)) is None
    assert label_group(_record(gender=0)) is None


def test_photo_report_counts_detection_groups_gender_and_unsure_calls():
    records = [
        _record(age=34, age_low=34, age_high=34, gender=0, ethnicity=0),
        _record(age=72, age_low=72, age_high=72, gender=1, ethnicity=1),
        _record(age_low=30, age_high=39, gender=1),
        _record(gender=0),
    ]
    results = [_result(36, "male", 0.95), _result(55, "female", 0.6, "black"), _result(45, "male", 0.9), None]
    report = photo_report(records, results)
    assert report["photos"] == 4 and report["detected"] == 3 and report["detection_rate"] == 0.75
    assert report["age_mae"] == pytest.approx((2 + 17) / 2)
    assert report["age_bias"] == pytest.approx((2 - 17) / 2)
    assert report["age_by_group"]["70+"] == {"n": 1, "mae": 17.0, "bias": -17.0}
    # 34 -> 36 right group; 72 -> 55 two groups off; range 30-39 -> 45 one group off
    assert report["age_group_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert report["age_group_within_one"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["gender_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["gender_unsure_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert report["gender_accuracy_by_age_group"]["30-39"] == {"n": 2, "accuracy": 0.5}
    assert report["ethnicity_accuracy"] == 1.0
    assert report["ethnicity_confusion"]["matrix"][1][1] == 1
    json.dumps(report)  # JSON-able


def test_jitter_views_and_degradations_keep_shape():
    from training.robustness import DEGRADATIONS, degrade, jitter_views

    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    views = jitter_views(face, 5, rng)
    assert views.shape == (5, 64, 64, 3) and views.dtype == np.uint8
    assert not np.array_equal(views[0], views[1])
    for kind in DEGRADATIONS:
        out = degrade(face, kind)
        assert out.shape == face.shape and out.dtype == np.uint8
    assert (degrade(face, "grayscale")[..., 0] == degrade(face, "grayscale")[..., 2]).all()
    with pytest.raises(ValueError):
        degrade(face, "sepia")


def test_jitter_spread_is_zero_for_a_model_that_ignores_framing_and_positive_otherwise():
    from model.results import HeadOutputs
    from training.robustness import jitter_spread

    class Constant:
        def __call__(self, faces):
            n = len(faces)
            return HeadOutputs(np.full(n, 30.0), np.zeros((n, 2)), np.zeros((n, 3)),
                               np.tile([0.3, 0.7], (n, 1)), np.zeros((n, 5)))

    class LooksAtTheCentre:
        """Answers from the centre patch only, so re-framing moves them."""

        def __call__(self, faces):
            centre = faces[:, 56:72, 56:72].reshape(len(faces), -1).mean(1) / 255.0
            gender = np.stack([1 - centre, centre], 1)
            return HeadOutputs(centre * 80, np.zeros((len(faces), 2)), np.zeros((len(faces), 3)), gender,
                               np.zeros((len(faces), 5)))

    rng = np.random.default_rng(1)
    faces = rng.integers(0, 255, (6, 128, 128, 3), dtype=np.uint8)
    flat = jitter_spread(Constant(), faces, views=4)
    assert flat["gender_probability_sd"] == 0 and flat["age_sd_years"] == 0 and flat["gender_call_flips"] == 0
    assert flat["age_group_changes"] == 0
    faces = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_NEAREST) for f in faces[:, :8, :8]])
    moving = jitter_spread(LooksAtTheCentre(), faces, views=4)
    assert moving["faces"] == 6 and moving["age_sd_years"] > 0.5 and moving["gender_probability_sd"] > 0.005
    assert 0 < moving["age_group_changes"] <= 1


def test_hidden_hair_study_catches_a_model_that_reads_gender_from_the_crops_edges():
    """A model that reads gender from the outer columns (the hair) loses the women when the
    sides are greyed; one that reads the centre does not; children are left out."""
    from model.results import HeadOutputs
    from training.robustness import hidden_hair_report, hide_hair

    def answers(score):
        p = np.clip(score, 0.0, 1.0)
        n = len(p)
        return HeadOutputs(np.full(n, 30.0), np.zeros((n, 2)), np.zeros((n, 3)), np.stack([1 - p, p], 1),
                           np.zeros((n, 5)))

    class ReadsTheEdges:
        def __call__(self, faces):
            return answers(faces[:, 40:, :5].mean((1, 2, 3)) / 255.0 - 0.1)  # a bright side margin: a woman

    class ReadsTheCentre:
        def __call__(self, faces):
            return answers(faces[:, 40:60, 40:60].mean((1, 2, 3)) / 255.0 - 0.1)

    faces = np.full((6, 100, 100, 3), 20, np.uint8)
    gender = np.array([1, 1, 1, 0, 0, 1])
    faces[gender == 1] = 230  # women: bright everywhere; men: dark everywhere
    age = np.array([30, 45, -1, 30, 50, 8])  # the 8-year-old is left out
    hidden = hide_hair(faces, 0.15, 0.0)
    assert (hidden[:, :, :15] == 128).all() and (hidden[:, :, 85:] == 128).all()
    assert np.array_equal(hidden[:, :, 15:85], faces[:, :, 15:85])
    assert (hide_hair(faces, 0.0, 0.15)[:, :15] == 128).all()

    edges = hidden_hair_report(ReadsTheEdges(), faces, {"gender": gender, "age": age})
    assert edges["n_women"] == 3 and edges["n_men"] == 2
    assert edges["plain"] == {"women": 1.0, "men": 1.0}
    assert edges["sides"] == {"women": 0.0, "men": 1.0} and edges["top"] == edges["plain"]
    centre = hidden_hair_report(ReadsTheCentre(), faces, {"gender": gender, "age": age})
    assert centre["sides"] == centre["top"] == centre["plain"] == {"women": 1.0, "men": 1.0}


@pytest.mark.slow
def test_evaluate_photos_runs_the_whole_analyzer(tmp_path, untrained_model_path):
    """--photos: a labels.csv folder of whole photos -> one JSON object with the photo metrics."""
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "astronaut.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "images" / "blank.jpg"), np.full((120, 160, 3), 128, np.uint8))
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "labels.csv").write_text(
        "file,age,age_low,age_high,gender,ethnicity,identity\n"
        "images/astronaut.jpg,42,,,female,white,eileen\n"
        "images/blank.jpg,,30,39,male,,nobody\n"
        "images/broken.jpg,,,,female,,broken\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--photos", str(folder), "--model", str(untrained_model_path),
         "--quiet"],
        cwd=tmp_path, env={"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["photos"] == 3 and report["detected"] == 1
    assert report["age_by_group"]["40-49"]["n"] == 1
    assert 0.0 <= report["gender_unsure_share"] <= 1.0 and report["ethnicity_confusion"]["labels"][0] == "white"


def test_photo_sweep_runs_every_size_and_crop_through_the_analyzer():
    from training.robustness import photo_sweep

    class FakeFace:
        def __init__(self, width):
            self.box = (0, 0, 10, 10)
            self.age = 30.0 + width / 100
            self.gender_probabilities = {"male": 0.4, "female": 0.6}

    class Fake:
        def __init__(self):
            self.sizes = []

        def analyze(self, photo):
            self.sizes.append(photo.shape[:2])
            return [] if photo.shape[1] == 320 else [FakeFace(photo.shape[1])]

    analyzer = Fake()
    sweep = photo_sweep(analyzer, np.zeros((400, 600, 3), np.uint8), widths=(320, 640), crops=(0.0, 0.1))
    assert sweep["variants"] == 4 and sweep["found"] == 2
    assert analyzer.sizes == [(213, 320), (427, 640), (213, 320), (427, 640)]
    assert sweep["p_female_sd"] == 0.0 and sweep["age_min"] == pytest.approx(36.4)


def test_jitter_sample_draws_across_the_split_not_its_first_faces():
    """UTKFace files sort by age: the first faces of a split are children, not a fair sample."""
    from training.robustness import jitter_sample

    faces = np.arange(1000)[:, None, None, None] * np.ones((1, 2, 2, 3))
    picked = jitter_sample(faces, 100)[:, 0, 0, 0]
    assert len(picked) == 100 and len(set(picked)) == 100 and np.all(np.diff(picked) > 0)
    assert picked.max() > 800 and 300 < picked.mean() < 700
    assert np.array_equal(jitter_sample(faces, 100)[:, 0, 0, 0], picked)  # reproducible
    assert len(jitter_sample(faces[:50], 100)) == 50


def test_reframe_is_the_identity_without_jitter_and_keeps_a_photos_shape():
    from training.robustness import reframe

    rng = np.random.default_rng(2)
    photo = rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)
    assert np.array_equal(reframe(photo, rng, zoom=0, shift=0, rotation_deg=0), photo)
    moved = reframe(photo, rng, border=cv2.BORDER_REPLICATE)
    assert moved.shape == photo.shape and not np.array_equal(moved, photo)


def test_whole_photo_jitter_detects_every_view_and_leaves_out_photos_missed_in_one():
    """Each view of a photo goes through the detector and the aligner; a detector that follows
    the face exactly makes the aligned crops (and so the answers) barely move, and a photo
    whose face is lost in some view is counted, not scored."""
    from model.align import TEMPLATE
    from model.results import Detection, HeadOutputs
    from training.robustness import photo_jitter_crops, photo_jitter_spread, spread_summary

    class Follows:
        """'Detects' the bright disc wherever the re-framing moved it; loses it in dark photos."""

        def detect_all(self, photo):
            mask = photo[..., 0] > 128
            if not mask.any():
                return []
            ys, xs = np.nonzero(mask)
            x0, y0, side = xs.min(), ys.min(), xs.max() - xs.min() + 1
            marks = TEMPLATE / 200.0 * side + [x0, y0]
            return [Detection((float(x0), float(y0), float(side), float(side)), 0.99,
                              dict(zip(("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"), map(tuple, marks))))]

    class Brightness:
        input_size = 32

        def __call__(self, faces):
            level = faces.reshape(len(faces), -1).mean(1) / 255.0
            return HeadOutputs(level * 60, np.zeros((len(faces), 2)), np.zeros((len(faces), 3)),
                               np.stack([1 - level, level], 1), np.zeros((len(faces), 5)))

    disc = cv2.circle(np.zeros((240, 240, 3), np.uint8), (120, 120), 50, (200, 200, 200), -1)
    disc[100:140, 100:140] = 160  # something inside for the answers to depend on
    crops, missed = photo_jitter_crops(Follows(), [disc, np.zeros((240, 240, 3), np.uint8)], views=4)
    assert crops.shape == (1, 4, 200, 200, 3) and missed == 1
    spread = photo_jitter_spread(Brightness(), crops)
    assert spread["faces"] == 1 and spread["views"] == 4
    from model.preprocess import prepare_face
    from training.robustness import jitter_spread

    still = np.stack([prepare_face(crops[0, 0], 32)] * 3)  # the same crop re-framed without re-detection
    assert spread["age_sd_years"] < jitter_spread(Brightness(), still, views=4)["age_sd_years"] / 2
    assert photo_jitter_spread(Brightness(), crops[:0])["faces"] == 0
    summary = spread_summary(np.array([[0.4, 0.6], [0.9, 0.9]]), np.array([[25.0, 35.0], [50.0, 50.0]]))
    assert summary["gender_probability_sd"] == pytest.approx(0.05) and summary["age_sd_years"] == 2.5
    assert summary["gender_call_flips"] == 0.5 and summary["age_group_changes"] == 0.5


def test_whole_photo_figures_land_on_the_models_own_card_only(tmp_path, monkeypatch):
    """--whole-photos --card stores the figures as the card's photo_jitter, keeping the rest of
    the card; a card written for another model file is refused before any detection runs."""
    from model.card import ModelCard, card_to_update, file_sha256
    from training import robustness

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    card_path = ModelCard(name="m", model_sha256=file_sha256(model), framing_jitter={"x": {"faces": 1}}).write(
        tmp_path / "card.json")
    figures = {"faces": 2, "views": 3, "age_sd_years": 0.5}
    monkeypatch.setattr(robustness, "photo_jitter_crops", lambda detector, photos, views, progress: (np.zeros((2, 3, 4, 4, 3)), 0))
    monkeypatch.setattr(robustness, "photo_jitter_spread", lambda predictor, crops: dict(figures))
    monkeypatch.setattr("model.face_detect.FaceDetector", lambda: object())
    monkeypatch.setattr("model.architecture.load_model", lambda path: None)
    monkeypatch.setattr("model.inference.Predictor", lambda *a, **k: object())
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.jpg"), np.full((40, 40, 3), 90, np.uint8))
    (folder / "labels.csv").write_text("file,age,age_low,age_high,gender,ethnicity,identity\nimages/a.jpg,30,,,male,,p1\n")
    common = ["--whole-photos", "--source", f"gen={folder},split=0/100/0", "--model", str(model)]
    assert robustness.main([*common, "--card", str(card_path)]) == 0
    card = card_to_update(card_path, model)
    assert card.photo_jitter == {"gen": {**figures, "photos": 1, "left_out_no_face_in_a_view": 0}}
    assert card.framing_jitter == {"x": {"faces": 1}}
    model.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="written for another model file"):
        robustness.main([*common, "--card", str(card_path)])
    with pytest.raises(SystemExit):  # --card is for one model's whole-photo or hidden-hair study
        robustness.main(["--source", f"gen={folder}", "--card", str(card_path)])


def test_hidden_hair_figures_land_on_the_models_own_card_only(tmp_path, monkeypatch):
    from model.card import ModelCard, card_to_update, file_sha256
    from training import robustness

    model = tmp_path / "m.keras"
    model.write_bytes(b"weights")
    card_path = ModelCard(name="m", model_sha256=file_sha256(model), photo_jitter={"x": {"faces": 1}}).write(
        tmp_path / "card.json")
    figures = {"n_women": 1, "n_men": 0, "plain": {"women": 1.0, "men": None}}
    monkeypatch.setattr(robustness, "hidden_hair_report", lambda predictor, faces, labels: dict(figures))
    monkeypatch.setattr("training.prepare.load_prepared",
                        lambda spec, folder, size, split: ([], np.zeros((1, 4, 4, 3), np.uint8)))
    monkeypatch.setattr("training.sources.label_arrays", lambda records: {})
    monkeypatch.setattr("model.architecture.load_model", lambda path: None)
    monkeypatch.setattr("model.inference.Predictor", lambda *a, **k: type("P", (), {"input_size": 4})())
    common = ["--hidden-hair", "--source", f"gen={tmp_path}", "--model", str(model), "--split", "test"]
    assert robustness.main([*common, "--card", str(card_path)]) == 0
    card = card_to_update(card_path, model)
    assert card.hidden_hair == {"gen": {**figures, "split": "test"}} and card.photo_jitter == {"x": {"faces": 1}}
    model.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="written for another model file"):
        robustness.main([*common, "--card", str(card_path)])
