"""Architecture, preprocessing, compiled inference and a save/load round trip."""

import numpy as np
import pytest

from model.architecture import (
    LAST_CONV_LAYER,
    OUTPUT_NAMES,
    build_model,
    freeze_backbone,
    load_model,
    unfreeze_backbone,
)
from model.labels import ETHNICITIES, GENDERS, NUM_AGE_BINS
from model.preprocess import prepare_batch, prepare_face
from model.settings import INPUT_SIZE

pytestmark = pytest.mark.slow  # TensorFlow and model builds


def test_prepare_face_shapes_and_dtype():
    rng = np.random.default_rng(0)
    for shape in [(200, 200, 3), (48, 48), (300, 171, 3)]:
        out = prepare_face(rng.integers(0, 256, shape).astype(np.uint8))
        assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3) and out.dtype == np.uint8
    gray = prepare_face(np.full((48, 48), 77, np.uint8))
    assert (gray == 77).all()
    assert prepare_batch([]).shape == (0, INPUT_SIZE, INPUT_SIZE, 3)
    with pytest.raises(ValueError):
        prepare_face(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError):
        prepare_face(np.zeros((0, 10, 3), np.uint8))


def test_model_is_flat_with_named_heads(untrained_model):
    model = untrained_model
    assert model.output_names == list(OUTPUT_NAMES)
    assert model.get_layer(LAST_CONV_LAYER) is not None  # Grad-CAM can reach it
    assert not any(hasattr(layer, "layers") for layer in model.layers)  # no nested sub-models
    shapes = [tuple(o.shape) for o in model.outputs]
    assert shapes == [(None, 1), (None, NUM_AGE_BINS), (None, len(GENDERS)), (None, len(ETHNICITIES))]


def test_outputs_are_distributions_and_age_is_their_mean(untrained_model):
    faces = np.random.default_rng(1).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE, 3)).astype("float32")
    age, dist, gender, eth = (np.asarray(o) for o in untrained_model(faces, training=False))
    np.testing.assert_allclose(dist.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(gender.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(eth.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(age[:, 0], (dist * np.arange(NUM_AGE_BINS)).sum(1), rtol=1e-4)


def test_freeze_and_unfreeze_choose_which_layers_train():
    import keras

    model = build_model(96)
    freeze_backbone(model)
    assert not model.get_layer("Conv_1").trainable
    assert model.get_layer("gender").trainable
    count = unfreeze_backbone(model, "block_13_expand", train_batchnorm=False)
    assert count > 0
    assert model.get_layer("Conv_1").trainable and not model.get_layer("block_12_expand").trainable
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    unfreeze_backbone(model, "block_13_expand")
    assert model.get_layer("Conv_1_bn").trainable and not model.get_layer("block_12_expand_BN").trainable
    assert not model.get_layer("age").trainable  # the expected-value layer is fixed
    with pytest.raises(ValueError):
        unfreeze_backbone(model, "no_such_layer")


def test_save_load_round_trip(untrained_model, untrained_model_path):
    loaded = load_model(untrained_model_path)
    faces = np.random.default_rng(2).integers(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 3)).astype("float32")
    for a, b in zip(untrained_model(faces), loaded(faces)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_model(untrained_model_path.parent / "missing.keras")


def test_predictor_batches_and_flip_tta(untrained_model):
    from model.inference import Predictor

    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (5, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.uint8)
    plain = Predictor(untrained_model, flip_tta=False, batch_size=2)(faces)
    assert len(plain) == 5 and plain.age_interval.shape == (5, 2)
    assert (plain.age_interval[:, 0] <= plain.age).all() and (plain.age <= plain.age_interval[:, 1]).all()
    direct = np.asarray(untrained_model(faces.astype("float32"), training=False)[2])
    np.testing.assert_allclose(plain.gender, direct, atol=1e-5)
    tta = Predictor(untrained_model, flip_tta=True)(faces)
    flipped = Predictor(untrained_model, flip_tta=False)(faces[:, :, ::-1])
    np.testing.assert_allclose(tta.gender, (plain.gender + flipped.gender) / 2, atol=1e-5)
    empty = Predictor(untrained_model, flip_tta=False)(np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))
    assert len(empty) == 0
    with pytest.raises(ValueError):
        Predictor(untrained_model)(np.zeros((1, 64, 64, 3), np.uint8))


def test_predictor_progress_bar_counts_batches_and_changes_nothing(untrained_model, capsys):
    from model.inference import Predictor

    faces = np.random.default_rng(4).integers(0, 256, (5, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.uint8)
    predictor = Predictor(untrained_model, flip_tta=False, batch_size=2)
    quiet = predictor.raw(faces)
    assert "scoring" not in capsys.readouterr().err
    shown = predictor.raw(faces, progress="scoring")
    assert "scoring" in (err := capsys.readouterr().err) and "3/3" in err
    for name, value in quiet.items():
        np.testing.assert_array_equal(shown[name], value)
