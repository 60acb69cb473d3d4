"""The FaceAnalyzer facade on a real portrait (scikit-image's astronaut, Eileen Collins).

Shape, type and geometry checks run with an untrained model of the shipped
architecture; the accuracy checks need the trained model file and skip without it.
"""

from __future__ import annotations

import io
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from model import settings
from model.analyzer import (
    EXPLAIN_CACHE_SIZE,
    FaceAnalyzer,
    FaceResult,
    ImageError,
    TooManyFacesError,
    card_flip_tta,
)
from model.face_detect import FaceDetector
from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS
from model.lru import LRUCache

pytestmark = pytest.mark.slow  # MTCNN and a model of the shipped architecture

needs_trained_model = pytest.mark.skipif(
    not settings.DEFAULT_MODEL_PATH.is_file(),
    reason=f"accuracy checks need the trained model {settings.DEFAULT_MODEL_PATH.name}",
)


@pytest.fixture(scope="module")
def analyzer(untrained_model) -> FaceAnalyzer:
    return FaceAnalyzer(model=untrained_model)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(analyzer, astronaut) -> FaceResult:
    faces = analyzer.analyze(astronaut)
    assert len(faces) == 1
    return faces[0]


def _encode(array: np.ndarray, fmt: str, mode: str | None = None, **kwargs) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _box_close(a, b, tol: float = 8) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_astronaut_gives_one_sane_face(astronaut_face, astronaut):
    face = astronaut_face
    x, y, w, h = face.box
    assert all(type(v) is int for v in face.box)
    assert 150 < x < 210 and 40 < y < 90 and 70 < w < 110 and 90 < h < 140
    assert x + w <= astronaut.shape[1] and y + h <= astronaut.shape[0]
    assert face.index == 0 and face.detection_confidence > 0.95
    for px, py in face.landmarks.values():
        assert x - 5 < px < x + w + 5 and y - 5 < py < y + h + 5


def test_result_types_and_probabilities(astronaut_face):
    face = astronaut_face
    assert isinstance(face.age, float) and 0 <= face.age <= 116
    low, high = face.age_interval
    assert low <= face.age <= high
    assert face.age_group in AGE_GROUP_NAMES
    assert face.gender in GENDERS and face.ethnicity in ETHNICITIES
    assert list(face.ethnicity_probabilities) == list(ETHNICITIES)
    assert list(face.gender_probabilities) == list(GENDERS)
    assert sum(face.ethnicity_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(face.gender_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert face.gender_probability == max(face.gender_probabilities.values()) >= 0.5
    assert face.ethnicity_probabilities[face.ethnicity] == max(face.ethnicity_probabilities.values())
    assert face.face_input.shape == (settings.INPUT_SIZE, settings.INPUT_SIZE, 3)
    assert face.face_input.dtype == np.uint8
    assert face.crop_affine.shape == (2, 3)


def test_to_dict_is_json_with_plain_numbers(astronaut_face):
    d = astronaut_face.to_dict()
    assert "face_input" not in d and "crop_affine" not in d
    again = json.loads(json.dumps(d))
    assert again["box"] == list(astronaut_face.box)
    assert again["gender"] == astronaut_face.gender


def test_crop_affine_puts_the_eyes_where_utkface_crops_have_them(astronaut_face):
    from model.align import TEMPLATE, apply_affine

    eyes = apply_affine(astronaut_face.crop_affine, [astronaut_face.landmarks["left_eye"], astronaut_face.landmarks["right_eye"]])
    expected = TEMPLATE[:2] * settings.INPUT_SIZE / settings.UTKFACE_CROP_SIZE
    np.testing.assert_allclose(eyes, expected, atol=3)


def test_model_input_is_what_the_model_is_fed(analyzer, astronaut_face):
    direct = analyzer.predictor(astronaut_face.face_input[None])
    assert float(direct.age[0]) == pytest.approx(astronaut_face.age, abs=1e-3)


@pytest.mark.parametrize(
    "variant",
    ["png", "jpeg", "grayscale", "rgba", "exif_rotated", "pil", "file_object"],
)
def test_same_face_from_every_kind_of_input(analyzer, astronaut, astronaut_face, variant):
    if variant == "png":
        source = _encode(astronaut, "PNG")
    elif variant == "jpeg":
        source = _encode(astronaut, "JPEG", quality=92)
    elif variant == "grayscale":
        source = _encode(astronaut, "PNG", mode="L")
    elif variant == "rgba":
        rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
        source = _encode(rgba, "PNG")
    elif variant == "exif_rotated":
        # Stored sideways as a phone would, with the EXIF tag that turns it upright.
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        source = _encode(np.ascontiguousarray(np.rot90(astronaut, 1)), "JPEG", quality=92, exif=exif.tobytes())
    elif variant == "pil":
        source = Image.fromarray(astronaut)
    else:
        source = io.BytesIO(_encode(astronaut, "PNG"))
    faces = analyzer.analyze(source)
    assert len(faces) == 1
    assert _box_close(faces[0].box, astronaut_face.box), (faces[0].box, astronaut_face.box)
    if variant in ("png", "pil", "file_object", "rgba"):
        assert faces[0].age == pytest.approx(astronaut_face.age, abs=1e-3)


def test_two_copies_side_by_side_give_two_faces_left_to_right(analyzer, astronaut, astronaut_face):
    pair = np.hstack([astronaut, astronaut])
    faces = analyzer.analyze(pair)
    assert [f.index for f in faces] == [0, 1]
    assert _box_close(faces[0].box, astronaut_face.box)
    shifted = (astronaut_face.box[0] + 512, *astronaut_face.box[1:])
    assert _box_close(faces[1].box, shifted)
    assert faces[0].age == pytest.approx(faces[1].age, abs=0.5)


def test_too_many_faces_is_a_clear_error(untrained_model, astronaut):
    small = FaceAnalyzer(model=untrained_model, detector=FaceDetector(max_faces=1), warm_up=False)
    with pytest.raises(TooManyFacesError, match="found 2 faces"):
        small.analyze(np.hstack([astronaut, astronaut]))


def test_noise_gives_no_face_and_bad_input_a_clear_error(analyzer, tmp_path):
    rng = np.random.default_rng(0)
    assert analyzer.analyze(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    assert analyzer.last_timings["model"] >= 0 and set(analyzer.last_timings) == {"decode", "detect", "align", "model", "total"}
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        analyzer.analyze(text)
    jpeg = _encode(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        analyzer.analyze(jpeg[: len(jpeg) // 3])
    with pytest.raises(ImageError):
        analyzer.load_photo(np.zeros((0, 0, 3), np.uint8))


def test_flip_tta_default_comes_from_the_model_card(tmp_path, untrained_model_path, monkeypatch):
    monkeypatch.delenv("FACELENS_FLIP_TTA", raising=False)
    assert card_flip_tta(tmp_path / "absent.keras") is True
    (tmp_path / "model_card.json").write_text(json.dumps({"flip_tta": False}))
    assert card_flip_tta(tmp_path / "m.keras") is False
    (tmp_path / "model_card.json").write_text("{not json")
    assert card_flip_tta(tmp_path / "m.keras") is True


def test_flip_tta_environment_override_beats_the_card(tmp_path, monkeypatch):
    (tmp_path / "model_card.json").write_text(json.dumps({"flip_tta": True}))
    monkeypatch.setenv("FACELENS_FLIP_TTA", "0")
    assert card_flip_tta(tmp_path / "m.keras") is False
    monkeypatch.setenv("FACELENS_FLIP_TTA", "on")
    (tmp_path / "model_card.json").write_text(json.dumps({"flip_tta": False}))
    assert card_flip_tta(tmp_path / "m.keras") is True
    monkeypatch.setenv("FACELENS_FLIP_TTA", "maybe")  # not a switch: the card decides
    assert card_flip_tta(tmp_path / "m.keras") is False


def test_loads_a_model_file_and_reports_a_missing_one(untrained_model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="FACELENS_MODEL"):
        FaceAnalyzer(tmp_path / "missing.keras")
    loaded = FaceAnalyzer(untrained_model_path, flip_tta=False, warm_up=False)
    assert loaded.flip_tta is False and loaded.model_path == untrained_model_path


def test_explain_delegates_to_gradcam_and_caches_per_photo(analyzer, astronaut, astronaut_face, monkeypatch):
    import model
    from model import analyzer as analyzer_module

    calls = []
    fake = types.ModuleType("model.gradcam")

    class FakeExplainer:
        def __init__(self, m):
            self.model = m

    def explain_faces(explainer, photo, face, heads, targets, method="gradcam", alpha=0.45):
        calls.append((photo.shape, face.index, tuple(heads), dict(targets), method, alpha))
        return {head: ("explanation", head, len(calls)) for head in heads}

    fake.GradCamExplainer = FakeExplainer
    monkeypatch.setattr(analyzer_module, "face_explanations", explain_faces)
    monkeypatch.setitem(sys.modules, "model.gradcam", fake)
    monkeypatch.setattr(model, "gradcam", fake, raising=False)
    monkeypatch.setattr(analyzer, "_explainer", None)
    monkeypatch.setattr(analyzer, "_explain_cache", LRUCache(EXPLAIN_CACHE_SIZE))

    first = analyzer.explain(astronaut, astronaut_face, "gender")
    assert analyzer.explain(astronaut.copy(), astronaut_face, "gender") is first  # same photo: cached
    both = analyzer.explain_heads(astronaut, astronaut_face, [("ethnicity", 2), ("gender", None)])
    assert list(both) == ["ethnicity", "gender"] and both["gender"] is first  # only the missing head is computed
    analyzer.explain(astronaut[::-1].copy(), astronaut_face, "gender")  # another photo: recomputed
    assert [c[2:4] for c in calls] == [(("gender",), {"gender": None}), (("ethnicity",), {"ethnicity": 2}),
                                       (("gender",), {"gender": None})]
    assert calls[0][0] == astronaut.shape
    with pytest.raises(ValueError, match="head"):
        analyzer.explain(astronaut, astronaut_face, "mood")
    with pytest.raises(ValueError, match="once"):
        analyzer.explain_heads(astronaut, astronaut_face, [("gender", 0), ("gender", 1)])


def _counting_explanations(monkeypatch) -> list[tuple[str, ...]]:
    """Record the heads of every batched Grad-CAM call the analyzer makes."""
    from model import analyzer as analyzer_module

    calls: list[tuple[str, ...]] = []
    real = analyzer_module.face_explanations

    def counting(explainer, photo, face, heads, *args, **kwargs):
        calls.append(tuple(heads))
        return real(explainer, photo, face, heads, *args, **kwargs)

    monkeypatch.setattr(analyzer_module, "face_explanations", counting)
    return calls


def test_explain_heads_equals_one_head_at_a_time_in_one_batched_call(analyzer, astronaut, astronaut_face,
                                                                     monkeypatch):
    calls = _counting_explanations(monkeypatch)
    requests = [("age", None), ("gender", None), ("ethnicity", 2)]
    analyzer.clear_explain_cache()
    together = analyzer.explain_heads(astronaut, astronaut_face, requests, method="gradcam++", alpha=0.6)
    assert calls == [("age", "gender", "ethnicity")] and list(together) == ["age", "gender", "ethnicity"]
    again = analyzer.explain_heads(astronaut.copy(), astronaut_face, requests, method="gradcam++", alpha=0.6)
    assert len(calls) == 1 and all(again[head] is together[head] for head in again)  # cached

    analyzer.clear_explain_cache()  # the explainer's maps too: each head is computed again, alone
    alone = {head: analyzer.explain(astronaut, astronaut_face, head, target, method="gradcam++", alpha=0.6)
             for head, target in requests}
    assert calls[1:] == [("age",), ("gender",), ("ethnicity",)]
    for head, expl in together.items():
        single = alone[head]
        assert (expl.head, expl.target, expl.target_name, expl.method) == \
            (single.head, single.target, single.target_name, single.method)
        # Batched and single gradients differ only in float summation order (~1e-7), which can
        # tip a pixel's heat over a colour-map step: a few grey levels at a handful of pixels.
        np.testing.assert_allclose(expl.crop_heatmap, single.crop_heatmap, atol=1e-5)
        np.testing.assert_allclose(expl.photo_heatmap, single.photo_heatmap, atol=1e-5)
        differ = np.abs(expl.overlay.astype(int) - single.overlay)
        assert differ.max() <= 4 and (differ > 0).mean() < 1e-4
    assert together["ethnicity"].target == 2


def test_opacity_reblends_without_grad_cam_and_the_cache_stays_bounded(analyzer, astronaut, astronaut_face,
                                                                        monkeypatch):
    from model.labels import HEAD_CLASSES

    calls = _counting_explanations(monkeypatch)
    analyzer.clear_explain_cache()
    for alpha in np.linspace(0.0, 1.0, 21):  # an opacity slider dragged end to end
        dragged = analyzer.explain(astronaut, astronaut_face, "gender", alpha=float(alpha))
    assert calls == [("gender",)] and len(analyzer._explain_cache) == 1
    analyzer.clear_explain_cache()
    fresh = analyzer.explain(astronaut, astronaut_face, "gender", alpha=1.0)
    np.testing.assert_array_equal(dragged.photo_heatmap, fresh.photo_heatmap)
    np.testing.assert_array_equal(dragged.overlay, fresh.overlay)  # re-blended = computed at 1.0

    for method in ("gradcam", "gradcam++"):  # 2 x (1 + 2 + 5) = 16 explanations
        for head in ("age", "gender", "ethnicity"):
            for target in range(max(1, len(HEAD_CLASSES.get(head, ())))):
                analyzer.explain(astronaut, astronaut_face, head, target=target, method=method)
    assert len(analyzer._explain_cache) == EXPLAIN_CACHE_SIZE < 16


@needs_trained_model
def test_trained_model_sees_an_adult_and_is_not_sure_of_her_gender(astronaut):
    """The sample portrait (Eileen Collins in a flight suit) is a hard case for gender: the
    app must show an adult and, for gender, no confident verdict (the 'Unsure' band)."""
    analyzer = FaceAnalyzer(settings.DEFAULT_MODEL_PATH)
    (face,) = analyzer.analyze(astronaut)
    assert 20 <= face.age <= 65
    assert face.gender_probability < settings.GENDER_UNSURE_BELOW


@needs_trained_model
@pytest.mark.xfail(strict=True, reason="known error of the shipped model: the sample portrait reads male "
                   "(P(female) 0.485; earlier models 0.44, 0.38, 0.37, 0.36, 0.41 and 0.56), see README 'How good is it'")
def test_trained_model_sees_a_woman(astronaut):
    (face,) = FaceAnalyzer(settings.DEFAULT_MODEL_PATH).analyze(astronaut)
    assert face.gender == "female"


def test_all_faces_go_through_one_batched_model_call(analyzer, astronaut, monkeypatch):
    real = analyzer.predictor
    batches = []

    class Counting:
        def __call__(self, faces):
            batches.append(faces.shape)
            return real(faces)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(analyzer, "predictor", Counting())
    faces = analyzer.analyze(np.hstack([astronaut, astronaut, astronaut]))
    assert len(faces) == 3
    assert batches == [(3, settings.INPUT_SIZE, settings.INPUT_SIZE, 3)]


def test_degenerate_landmarks_are_dropped_not_raised(untrained_model, astronaut):
    from model.face_detect import Detection

    real = FaceDetector().detect(astronaut)[0]
    point = real.landmarks["nose"]
    broken = Detection((10.0, 10.0, 60.0, 60.0), 0.99, {k: point for k in real.landmarks})

    class FixedDetector:
        max_faces = settings.MAX_FACES

        def detect_all(self, photo):
            return [broken, real]

    faces = FaceAnalyzer(model=untrained_model, detector=FixedDetector(), warm_up=False).analyze(astronaut)
    assert len(faces) == 1 and faces[0].index == 0
    assert faces[0].detection_confidence == real.confidence and _box_close(faces[0].box, real.box, 2)


def test_the_analyzer_needs_only_detect_all_and_a_limit_and_applies_the_limit_itself(untrained_model, astronaut,
                                                                                     astronaut_face):
    from model.face_detect import Detection

    x, y, w, h = astronaut_face.box
    landmarks = dict(astronaut_face.landmarks)

    class ThreeFaces:  # model.face_detect.PhotoDetector and nothing more (no detect())
        max_faces = 2

        def detect_all(self, photo):
            return [Detection((x + 4.0 * k, y, w * (1 - 0.1 * k), h * (1 - 0.1 * k)), 0.99, landmarks)
                    for k in range(3)]

    analyzer = FaceAnalyzer(model=untrained_model, detector=ThreeFaces(), warm_up=False)
    result = analyzer.analyze_photo(astronaut, largest=2)  # a crowd with largest=N is never refused
    assert len(result.faces) == 2 and result.faces_found == 3 and result.limited
    assert [f.box[2] for f in result.faces] == [w, round(w * 0.9)]  # the two largest
    assert len(analyzer.analyze(astronaut, largest=5)) == 3
    with pytest.raises(TooManyFacesError, match="found 3 faces; at most 2"):
        analyzer.analyze(astronaut)  # without it, the detector's limit holds


def _crowd(astronaut: np.ndarray, n: int = 25) -> np.ndarray:
    """n copies of the astronaut's head on a 5-column grid, each a little larger than the last."""
    import cv2

    crop = astronaut[20:260, 110:330]
    rows = -(-n // 5)
    grid = np.full((rows * 240, 1200, 3), 235, np.uint8)
    for k in range(n):
        r, c = divmod(k, 5)
        side = 110 + 5 * k
        tile = cv2.resize(crop, (int(side * 220 / 240), side), interpolation=cv2.INTER_AREA)
        y, x = r * 240 + (240 - tile.shape[0]) // 2, c * 240 + (240 - tile.shape[1]) // 2
        grid[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return grid


def test_a_25_face_photo_gives_its_largest_faces_when_asked(analyzer, astronaut):
    crowd = _crowd(astronaut)
    everyone = analyzer.detector.detect_all(crowd)
    assert len(everyone) == 25
    with pytest.raises(TooManyFacesError, match="found 25 faces"):
        analyzer.analyze(crowd)  # without the option the API still refuses a crowd
    result = analyzer.analyze_photo(crowd, largest=settings.MAX_FACES)
    assert len(result.faces) == settings.MAX_FACES and result.faces_found == 25 and result.limited
    assert result.notes == [f"showing {settings.MAX_FACES} of 25 faces, the {settings.MAX_FACES} largest"]
    areas = sorted((d.box[2] * d.box[3] for d in everyone), reverse=True)
    kept = [f.box[2] * f.box[3] for f in result.faces]
    assert min(kept) >= areas[settings.MAX_FACES] * 0.95  # the dropped five are the smallest
    assert [f.index for f in result.faces] == list(range(settings.MAX_FACES))
    xs = [f.box[0] for f in result.faces]
    assert xs == sorted(xs)  # still numbered left to right, like every photo
    assert len(analyzer.analyze(crowd, largest=3)) == 3
    assert result.to_dict()["faces_found"] == 25


def test_a_gif_whose_face_is_in_frame_2_says_only_frame_1_was_analysed(analyzer, astronaut):
    face, flat = Image.fromarray(astronaut), Image.fromarray(np.full_like(astronaut, 128))
    late, early = io.BytesIO(), io.BytesIO()
    flat.save(late, format="GIF", save_all=True, append_images=[face])
    face.save(early, format="GIF", save_all=True, append_images=[flat])
    missed = analyzer.analyze_photo(late.getvalue())
    assert missed.faces == [] and missed.frames == 2 and missed.frame == 0
    found = analyzer.analyze_photo(early.getvalue())
    assert len(found.faces) == 1 and found.frames == 2
