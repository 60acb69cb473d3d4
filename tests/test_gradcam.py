"""Grad-CAM (model.gradcam): the log-odds score, and heat maps of every head
and method on untrained models (slow: TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import tensorflow as tf

from model import gradcam, heatmap_draw
from model.labels import ETHNICITIES, GENDERS, HEAD_NAMES
from model.results import CAM_METHODS
from model.settings import INPUT_SIZE
from tests.test_heatmap_draw import mapped_inside, similarity

S = INPUT_SIZE
pytestmark = pytest.mark.slow  # TensorFlow and a model build


@dataclass
class FakeFace:
    """The FaceResult fields model.gradcam reads."""

    index: int
    face_input: np.ndarray
    crop_affine: np.ndarray
    gender: str | None = None
    ethnicity: str | None = None


def test_log_odds_score_does_not_saturate():
    logits = tf.constant([[40.0, 0.0, -5.0], [1.0, 2.0, 3.0]])
    targets = tf.constant([0, 2])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        score = gradcam._log_odds(logits, targets)
    p = tf.nn.softmax(logits).numpy()
    assert score.numpy()[1] == pytest.approx(np.log(p[1, 2] / (1 - p[1, 2])), rel=1e-5)
    assert score.numpy()[0] == pytest.approx(40.0 - np.log(1 + np.exp(-5.0)), rel=1e-5)
    grad = tape.gradient(score, logits).numpy()
    assert grad[0, 0] == pytest.approx(1.0)  # p = 1 - 4e-18, yet the gradient is intact


# --- heat maps on untrained models -----------------------------------------------------------


def synthetic_faces(n: int, seed: int) -> np.ndarray:
    from tests.conftest import synthetic_face

    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(synthetic_face(rng, tone=120 + 20 * (i % 5)), (S, S), interpolation=cv2.INTER_AREA)
                     for i in range(n)])


@pytest.fixture(scope="module")
def lively_model():
    """The shipped architecture, random weights, BatchNorm statistics set from synthetic faces.

    A freshly initialised MobileNetV2 has vanishing activations (~1e-11 at out_relu),
    so its maps would be rounding noise; after one calibration pass the activations
    are O(1) and the random heads disagree, which is what these tests need.
    """
    import keras

    from model.architecture import build_model

    keras.utils.set_random_seed(7)  # a fixed random model: the tests below must not be flaky
    model = build_model(S)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.trainable, layer.momentum = True, 0.0  # moving statistics := this batch's
    model(synthetic_faces(16, seed=0).astype(np.float32), training=True)
    for layer in norms:
        layer.trainable = False
    return model


@pytest.fixture(scope="module")
def explainer(lively_model):
    return gradcam.GradCamExplainer(lively_model, scorecam_max_n=8)


@pytest.fixture(scope="module")
def face_input():
    return synthetic_faces(1, seed=3)[0]


def test_degenerate_maps_of_a_fresh_model_stay_finite_and_in_range(untrained_model, face_input):
    maps = gradcam.GradCamExplainer(untrained_model).heatmaps(face_input, HEAD_NAMES, "gradcam")
    for heat in maps.values():
        assert heat.shape == (S, S) and np.isfinite(heat).all()
        assert heat.min() >= 0.0 and heat.max() <= 1.0


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_heatmaps_have_the_crop_shape_and_unit_range(explainer, face_input, method):
    maps = explainer.heatmaps(face_input, HEAD_NAMES, method)
    assert set(maps) == set(HEAD_NAMES)
    for heat in maps.values():
        assert heat.shape == (S, S) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.max() == pytest.approx(1.0)  # scaled by its peak, not left tiny


def test_the_three_heads_get_different_maps(explainer, face_input):
    maps = explainer.heatmaps(face_input, HEAD_NAMES, "gradcam")
    for a, b in [("age", "gender"), ("age", "ethnicity"), ("gender", "ethnicity")]:
        assert np.abs(maps[a] - maps[b]).max() > 0.05, f"{a} and {b} maps are the same"


def test_batched_heads_match_one_head_at_a_time(lively_model, face_input):
    batched = gradcam.GradCamExplainer(lively_model).heatmaps(face_input, HEAD_NAMES, "gradcam++")
    single = gradcam.GradCamExplainer(lively_model)
    for head in HEAD_NAMES:
        np.testing.assert_allclose(single.heatmap(face_input, head, method="gradcam++"), batched[head], atol=1e-4)


def test_head_model_gives_the_same_cam_as_tf_keras_vis_on_the_whole_network(explainer, face_input):
    """The speed-up (backbone once, tf-keras-vis on the heads) must not change the maps."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import InactiveScore

    from model.architecture import LAST_CONV_LAYER

    target = tf.constant([1])
    scores = [InactiveScore(), lambda out: gradcam._log_odds(out, target), InactiveScore()]
    whole = Gradcam(explainer.logit_model, model_modifier=None, clone=False)
    cam = whole(scores, face_input[None].astype(np.float32), penultimate_layer=LAST_CONV_LAYER,
                seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False)
    expected = gradcam._upsample_cam(np.asarray(cam)[0], S)
    np.testing.assert_allclose(explainer.heatmap(face_input, "gender", 1), expected, atol=1e-4)


def test_targets_by_name_index_or_prediction(explainer, face_input):
    by_name = explainer.heatmap(face_input, "ethnicity", "asian")
    by_index = explainer.heatmap(face_input, "ethnicity", ETHNICITIES.index("asian"))
    assert by_name is by_index  # the same cached map
    predicted = int(np.argmax(explainer.head_outputs(face_input[None])["gender"][0]))
    assert explainer.resolve_target("gender", None, face_input) == (predicted, GENDERS[predicted])
    assert explainer.resolve_target("age", "female") == (None, gradcam.AGE_TARGET_NAME)
    other = explainer.heatmap(face_input, "gender", 1 - predicted)
    assert np.abs(other - explainer.heatmap(face_input, "gender")).max() > 0.05
    with pytest.raises(ValueError):
        explainer.heatmap(face_input, "ethnicity", 5)
    with pytest.raises(ValueError):
        explainer.heatmap(face_input, "ethnicity", "martian")
    with pytest.raises(ValueError):
        explainer.heatmap(face_input, "mood")
    with pytest.raises(ValueError):
        explainer.heatmap(face_input, "age", method="lime")


def test_explain_face_maps_back_into_the_photo(explainer, face_input):
    photo = np.random.default_rng(5).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    affine = similarity(1.2, -10.0, -150.0, -60.0)  # a face around photo (170, 130), tilted
    face = FakeFace(0, face_input, affine, gender="female")
    inside = mapped_inside(affine, photo.shape[:2])
    for head in HEAD_NAMES:
        expl = heatmap_draw.face_explanation(explainer, photo, face, head, alpha=0.6)
        assert expl.head == head and expl.method == "gradcam"
        assert expl.photo_heatmap.shape == (300, 400) and expl.photo_heatmap.dtype == np.float32
        assert expl.photo_heatmap.min() >= 0.0 and expl.photo_heatmap.max() <= 1.0
        assert np.all(expl.photo_heatmap[~inside] == 0.0) and expl.photo_heatmap[inside].max() > 0.5
        assert expl.overlay.shape == photo.shape and expl.overlay.dtype == np.uint8
        np.testing.assert_array_equal(expl.overlay[~inside], photo[~inside])
        assert not np.array_equal(expl.overlay[inside], photo[inside])
    gender = heatmap_draw.face_explanation(explainer, photo, face, "gender")
    assert (gender.target, gender.target_name) == (1, "female")  # the face's reported class
    male = heatmap_draw.face_explanation(explainer, photo, face, "gender", target="male")
    assert (male.target, male.target_name) == (0, "male")
    age = heatmap_draw.face_explanation(explainer, photo, face, "age", target=1)
    assert (age.target, age.target_name) == (None, gradcam.AGE_TARGET_NAME)


def test_explanations_are_computed_once_per_face(explainer, face_input):
    first = explainer.heatmap(face_input, "age", method="gradcam++")
    assert explainer.heatmap(face_input, "age", method="gradcam++") is first
    with pytest.raises(ValueError):
        first[0, 0] = 0.5  # cached maps are read-only


# --- faithfulness on the trained model -------------------------------------------------------
