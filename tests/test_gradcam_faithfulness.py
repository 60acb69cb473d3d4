"""The Grad-CAM faithfulness study (training.gradcam_faithfulness): occlusion masks and the
hot-against-random check on a stand-in explainer, then on the trained model (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from model.labels import ETHNICITIES
from model.settings import INPUT_SIZE
from training import gradcam_faithfulness as study

S = INPUT_SIZE


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 photo -> crop map: rotate by ``angle_deg``, scale, then shift."""
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])



def test_occlusion_masks_hide_the_hottest_pixels_and_random_blobs_of_the_same_size():
    heat = np.zeros((S, S))
    heat[:32, :] = np.linspace(0.5, 1.0, 32 * S).reshape(32, S)  # a quarter of the crop, warm
    hot, rand = study.occlusion_masks(heat, 0.25, np.random.default_rng(1), n_random=5)
    assert hot.sum() == S * S // 4
    assert hot[:32].all()
    assert rand.shape == (5, S, S) and all(m.sum() == hot.sum() for m in rand)
    assert len({m.tobytes() for m in rand}) == 5
    region = np.zeros((S, S), bool)
    region[64:, 64:] = True
    hot_r, rand_r = study.occlusion_masks(heat, 0.2, np.random.default_rng(1), n_random=3, region=region)
    assert hot_r.sum() == round(0.2 * region.sum()) and not (hot_r & ~region).any()
    assert not (rand_r & ~region).any()
    with pytest.raises(ValueError):
        study.occlusion_masks(heat, 1.0)


def test_box_region_maps_the_photo_box_into_the_crop():
    affine = np.array([[2.0, 0.0, -200.0], [0.0, 2.0, -100.0]])  # photo (100, 50) -> crop (0, 0)
    mask = study.box_region((110, 60, 20, 30), affine)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (20, 20, 60, 80)


class CentreBrightness:
    """Stands in for an explainer: the "ethnicity" output is the brightness of the crop's centre."""

    cam_shape = (4, 4)

    def resolve_target(self, head, target, face_input=None):
        return 0, ETHNICITIES[0]

    def explained_output(self, faces, head, target):
        return np.asarray(faces, np.float64)[:, 48:80, 48:80].mean(axis=(1, 2, 3)) / 255.0

    def heatmap(self, face_input, head, target=None, method="gradcam"):
        heat = np.zeros((S, S), np.float32)
        heat[48:80, 48:80] = 1.0
        return heat


def test_occlusion_test_measures_hot_against_random_occlusion():
    face = np.full((S, S, 3), 30, np.uint8)
    face[40:88, 40:88] = 250  # bright centre on a dark face: the mean fill darkens the centre
    centre = np.zeros((S, S), np.float32)
    centre[48:80, 48:80] = 1.0
    good = study.occlusion_test(CentreBrightness(), face, centre, "ethnicity", rng=np.random.default_rng(0))
    assert good.base == pytest.approx(250 / 255)
    assert good.drop_hot > 0.5 and good.drop_hot > good.drop_random and good.margin > 0
    corner = np.zeros((S, S), np.float32)
    corner[:40, :40] = 1.0  # a map pointing away from what matters
    bad = study.occlusion_test(CentreBrightness(), face, corner, "ethnicity", rng=np.random.default_rng(0))
    assert bad.drop_hot < bad.drop_random


def test_summarize_occlusion_averages_over_faces():
    faces = []
    for level in (150, 200, 250):
        face = np.full((S, S, 3), 30, np.uint8)
        face[40:88, 40:88] = level
        faces.append(face)
    (row,) = study.summarize_occlusion(CentreBrightness(), faces, heads=("ethnicity",), n_random=4)
    assert (row.head, row.method, row.faces, row.wins) == ("ethnicity", "gradcam", 3, 3)
    assert row.faithful and row.drop_hot > 0.3 and np.isfinite(row.t_stat) and row.t_stat > 0
    # the printed verdict asks for t >= 2, as the Explain page does: a higher mean alone can be chance
    assert [study.OcclusionSummary("age", "gradcam", 9, hot, 1.0, 5, t).verdict
            for hot, t in ((2.0, 2.5), (1.2, 1.6), (0.5, -3.0))] == ["faithful", "not clearly (t < 2)", "NOT faithful"]


@pytest.fixture(scope="module")
def trained_analyzer():
    from model import settings

    path = settings.model_path()
    if not path.is_file():
        pytest.skip(f"faithfulness needs the trained model; none at {path} (set FACELENS_MODEL)")
    from model.analyzer import FaceAnalyzer

    return FaceAnalyzer(path)


@pytest.mark.slow
def test_gender_and_ethnicity_maps_are_faithful_over_a_hundred_lfw_faces(trained_analyzer):
    """Hiding the hottest fifth of each face lowers the explained gender and ethnicity
    probabilities more than random blobs, on average over scikit-image's 100 LFW faces
    (different people; the astronaut and its variants are one face, whose verdict flipped
    between checkpoints). Measured: gender t = 10.3 and ethnicity t = 3.5-5.1 for the three
    latest models (one a candidate not shipped). The age head is left to the UTKFace test below: on 25-pixel grayscale
    faces any fifth hidden moves the age by 9-12 years, and the hottest fifth less than
    random blobs for each of those models (t = -1.4 to -3.7)."""
    from model.gradcam import GradCamExplainer

    explainer = GradCamExplainer(trained_analyzer.model)
    rows = study.summarize_occlusion(explainer, study.lfw_faces(explainer.input_size), heads=("gender", "ethnicity"),
                                     n_random=8)
    assert [(r.head, r.faces) for r in rows] == [("gender", 100), ("ethnicity", 100)]
    for row in rows:
        assert row.drop_hot > row.drop_random and row.t_stat > 2, (
            f"{row.head}: hot {row.drop_hot:.3f} vs random {row.drop_random:.3f}, t {row.t_stat:.1f} "
            f"(hot wins {row.wins}/100)")


@pytest.mark.slow
@pytest.mark.shared_data
def test_each_head_is_faithful_on_average_over_real_utkface_faces(trained_analyzer):
    from model import settings
    from model.gradcam import GradCamExplainer

    explainer = GradCamExplainer(trained_analyzer.model)
    # 200 faces: at 60 the age head's comparison was a coin flip for each of three models
    # (t between -0.4 and +0.5). At 200 the age map's hot fifth beats random on average for
    # the shipped model (t = 2.9) and a later candidate (1.6, not clearly); the Explain page
    # quotes the card's t, so this checks only the direction.
    faces = study.utkface_faces(settings.utkface_dir(), 200, seed=0, size=explainer.input_size)
    rows = study.summarize_occlusion(explainer, faces, n_random=8)
    for row in rows:
        assert row.faces == 200
        assert row.drop_hot > row.drop_random, (
            f"{row.head}: hiding the hottest fifth lowers the output by {row.drop_hot:.3f} on average over "
            f"200 faces, random blobs by {row.drop_random:.3f} (hot wins {row.wins}/200)"
        )


def _rows(method: str, t_age: float, faces: int = 50) -> list[study.OcclusionSummary]:
    return [study.OcclusionSummary("age", method, faces, 2.0, 1.0, 30, t_age),
            study.OcclusionSummary("gender", method, faces, 0.05, 0.01, 40, float("nan"))]


def test_the_study_is_stored_in_the_card_and_merged_with_earlier_runs(tmp_path):
    from model.card import ModelCard, read_card

    path = ModelCard(name="m").write(tmp_path / "card.json")
    study.write_to_card(path, study.card_section({"utkface": ("50 UTKFace faces", _rows("gradcam", 2.5))}))
    study.write_to_card(path, study.card_section({"utkface": ("50 UTKFace faces", _rows("scorecam", -1.0)),
                                                  "lfw": ("50 LFW faces", _rows("gradcam", 0.5))}))
    card = read_card(path)
    assert card.faithfulness["fraction"] == study.OCCLUSION_FRACTION
    assert set(card.faithfulness["sets"]["utkface"]["results"]) == {"gradcam", "scorecam"}  # merged, same faces
    assert card.faithfulness["sets"]["utkface"]["results"]["gradcam"]["gender"]["t"] is None  # NaN is not JSON
    assert [(c.faces_label, c.t_stat) for c in card.map_checks("gradcam", "age")] == [
        ("50 UTKFace faces", 2.5), ("50 LFW faces", 0.5)]
    # a study on another number of faces replaces the set's results instead of mixing them
    study.write_to_card(path, study.card_section({"utkface": ("80 UTKFace faces", _rows("gradcam", 1.0, 80))}))
    again = read_card(path).faithfulness["sets"]
    assert (again["utkface"]["label"], again["utkface"]["faces"]) == ("80 UTKFace faces", 80)
    assert set(again["utkface"]["results"]) == {"gradcam"} and set(again["lfw"]["results"]) == {"gradcam"}
    with pytest.raises(ValueError, match="no readable model card"):
        study.write_to_card(tmp_path / "absent.json", study.card_section({}))


def test_the_study_is_not_stored_in_another_model_files_card(tmp_path):
    from model.card import ModelCard, file_sha256, read_card

    model, other = tmp_path / "m.keras", tmp_path / "other.keras"
    model.write_bytes(b"weights")
    other.write_bytes(b"other weights")
    path = ModelCard(name="m", model_sha256=file_sha256(model)).write(tmp_path / "card.json")
    section = study.card_section({"lfw": ("50 LFW faces", _rows("gradcam", 2.5))})
    with pytest.raises(ValueError, match="written for another model file"):
        study.write_to_card(path, section, other)
    assert not read_card(path).faithfulness
    study.write_to_card(path, section, model)
    assert read_card(path).describes(model) and read_card(path).describes(other) is False
    assert ModelCard().describes(model) is None and read_card(path).describes(tmp_path / "gone.keras") is None


@pytest.mark.slow
def test_the_cli_checks_lfw_faces_and_writes_the_card(untrained_model_path, tmp_path, capsys):
    from model.card import ModelCard, read_card

    path = ModelCard(name="m").write(tmp_path / "card.json")
    assert study.main(["--model", str(untrained_model_path), "--utkface", "0", "--lfw", "3",
                       "--methods", "gradcam", "--card", str(path)]) == 0
    out = capsys.readouterr().out
    assert "astronaut x5" in out and "3 small grayscale LFW faces" in out and "stored in" in out
    checks = read_card(path).map_checks("gradcam", "ethnicity")
    assert [(c.faces_label, c.faces) for c in checks] == [("3 small grayscale LFW faces", 3)]
    with pytest.raises(SystemExit):
        study.main(["--lfw", "101"])
