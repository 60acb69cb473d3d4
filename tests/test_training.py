"""Training pipeline pieces and an end-to-end smoke run on tiny generated data."""

import json

import numpy as np
import pytest

from training.cache import cache_key, cached_images
from training.data import index_utkface_dir
from training.train import inverse_frequency_weights, parse_args, sample_weights


def test_inverse_frequency_weights_favour_rare_classes():
    codes = np.array([0] * 90 + [1] * 10)
    w = inverse_frequency_weights(codes, 3, power=0.5)
    assert w[1] > w[0] and w[2] == 0.0
    assert w[codes].mean() == pytest.approx(1.0)
    per_head = sample_weights(np.array([1, 1, 1, 80]), np.array([0, 0, 1, 1]), np.array([0, 0, 0, 4]), 0.5)
    assert per_head["age"][3] > per_head["age"][0]
    assert per_head["ethnicity"][3] > per_head["ethnicity"][0]


def test_augment_batch_keeps_shape_and_range():
    import tensorflow as tf

    from training.augment import augment_batch

    images = tf.random.uniform((4, 32, 32, 3), 0, 255)
    out = augment_batch(images).numpy()
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images.numpy())


def test_cache_round_trip(tmp_path, utkface_dir):
    samples = index_utkface_dir(utkface_dir).samples[:6]
    images, ok = cached_images(samples, 64, tmp_path)
    assert images.shape == (6, 64, 64, 3) and ok.all()
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again, _ = cached_images(samples, 64, tmp_path)
    np.testing.assert_array_equal(images, again)
    assert cache_key(samples, 64) != cache_key(samples[:5], 64) != cache_key(samples, 96)


def test_parse_args_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "none.h5"))
    cfg = parse_args(["--data-dir", "x", "--epochs", "3", "--strategy", "mirrored"])
    assert cfg.epochs == 3 and cfg.strategy == "mirrored" and cfg.imagenet_weights is None
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "x", "--schedule", "bogus"])


@pytest.mark.slow
def test_training_smoke_run_exports_model_and_card(tmp_path, monkeypatch):
    from tests.conftest import write_utkface_folder
    from training.train import main

    data = tmp_path / "data"
    write_utkface_folder(data, n=120, seed=11)
    out = tmp_path / "model" / "m.keras"
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "absent.h5"))  # random init, no download
    code = main([
        "--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--output", str(out),
        "--input-size", "64", "--batch-size", "16", "--head-epochs", "1", "--epochs", "1",
        "--cache-dir", str(tmp_path / "cache"), "--verbose", "0",
    ])
    assert code == 0
    assert out.is_file() and (tmp_path / "run" / "history.csv").is_file()
    card = json.loads((out.parent / "model_card.json").read_text())
    assert card["input"]["size"] == 64
    assert card["test_metrics"]["n"] == card["splits"]["test"] > 0
    assert len(card["training"]["history"]) == 2  # one head epoch + one fine-tune epoch
    assert card["data"]["n"] == 120


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(tmp_path, monkeypatch):
    from tests.conftest import write_utkface_folder
    from training.train import main

    data = tmp_path / "data"
    write_utkface_folder(data, n=60, seed=12)
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "absent.h5"))
    common = ["--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--input-size", "48",
              "--batch-size", "16", "--head-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--verbose", "0"]
    assert main([*common, "--epochs", "1"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state == {"phase": "fine_tune", "epochs_done": 1}
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state == {"phase": "fine_tune", "epochs_done": 2}
    history = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3  # header + head epoch + two fine-tune epochs


def test_weighted_soft_crossentropy_has_the_right_gradient():
    """Weighted targets (w * q) must give w * CE(q) and a zero gradient at p == q;
    Keras' plain cross-entropy under TensorFlow back-propagates softmax - target,
    which never vanishes when the target sums to w != 1 and made training diverge."""
    import keras
    import tensorflow as tf

    from training.train import weighted_soft_crossentropy

    q = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    w = tf.constant([[2.5], [0.4]])
    logits = tf.Variable(tf.math.log(q))
    with tf.GradientTape() as tape:
        probs = keras.activations.softmax(logits)
        loss = tf.reduce_sum(weighted_soft_crossentropy(q * w, probs))
    grad = tape.gradient(loss, logits).numpy()
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    expected = keras.losses.categorical_crossentropy(q, q).numpy() * w.numpy()[:, 0]
    np.testing.assert_allclose(weighted_soft_crossentropy(q * w, q).numpy(), expected, rtol=1e-5)
