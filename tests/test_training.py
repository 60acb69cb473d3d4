"""Training pipeline pieces and an end-to-end smoke run on tiny generated data."""

import json

import numpy as np
import pytest

from training.train import inverse_frequency_weights, parse_args, sample_weights

pytestmark = pytest.mark.slow  # training.train and the losses load TensorFlow


def test_inverse_frequency_weights_favour_rare_classes():
    codes = np.array([0] * 90 + [1] * 10)
    w = inverse_frequency_weights(codes, 3, power=0.5)
    assert w[1] > w[0] and w[2] == 0.0
    assert w[codes].mean() == pytest.approx(1.0)
    ages = np.array([1, 1, 1, 80, -1])
    labels = {"age": ages, "age_low": np.array([1, 1, 1, 80, 30]), "age_high": np.array([1, 1, 1, 80, 39]),
              "gender": np.array([0, 0, 1, 1, -1]), "ethnicity": np.array([0, 0, 0, 4, -1])}
    per_head = sample_weights(labels, 0.5)
    assert per_head["age"][3] > per_head["age"][0] and per_head["age"][4] > 0  # a range label counts too
    assert per_head["ethnicity"][3] > per_head["ethnicity"][0]
    assert per_head["gender"][4] == 0 and per_head["ethnicity"][4] == 0  # no label, no weight
    masked = inverse_frequency_weights(np.array([0, 0, 1, -1, -1]), 2, power=1.0)
    assert masked[1] == pytest.approx(2 * masked[0])


def test_augment_batch_keeps_shape_and_range():
    import tensorflow as tf

    from training.augment import augment_batch

    images = tf.random.uniform((4, 32, 32, 3), 0, 255)
    out = augment_batch(images).numpy()
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images.numpy())


def test_projective_transforms_are_the_identity_or_the_mirror_without_geometry_jitter():
    import tensorflow as tf

    from training.augment import AugmentConfig, _transforms

    tf.random.set_seed(3)
    still = AugmentConfig(max_rotation_deg=0.0, zoom_range=(1.0, 1.0), max_shift=0.0)
    rows = _transforms(64, 32, still).numpy()
    identity = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)
    mirror = np.array([-1, 0, 31, 0, 1, 0, 0, 0], np.float32)  # input x = 31 - output x
    is_identity = np.isclose(rows, identity, atol=1e-5).all(1)
    is_mirror = np.isclose(rows, mirror, atol=1e-5).all(1)
    assert (is_identity | is_mirror).all() and 10 < is_mirror.sum() < 54  # half of them flipped
    zoomed = _transforms(1, 32, AugmentConfig(max_rotation_deg=0.0, zoom_range=(2.0, 2.0), max_shift=0.0)).numpy()[0]
    assert abs(zoomed[0]) == pytest.approx(0.5) and zoomed[4] == pytest.approx(0.5)  # 2x zoom samples half the side
    assert zoomed[5] == pytest.approx(7.75)  # centred: 15.5 - 0.5 * 15.5


def test_parse_args_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "none.h5"))
    cfg = parse_args(["--data-dir", "x", "--epochs", "3", "--strategy", "mirrored"])
    assert cfg.epochs == 3 and cfg.strategy == "mirrored" and cfg.imagenet_weights is None
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "x", "--schedule", "bogus"])


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
    from model.card import ModelCard, file_sha256

    assert card["model_sha256"] == file_sha256(out) and ModelCard.from_dict(card).describes(out)
    # read-out corrections fitted at export, stored beside the model, reported before/after
    assert (out.parent / "m.calibration.npz").is_file()
    assert set(card["calibration"]["validation"]["data"]) == {"before", "after"}
    assert {"interval_below", "interval_above"} <= set(card["calibration"]["fitted"])


def test_resume_continues_from_last_checkpoint(tmp_path, monkeypatch):
    from tests.conftest import write_utkface_folder
    from training.train import main

    data = tmp_path / "data"
    write_utkface_folder(data, n=60, seed=12)
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "absent.h5"))
    common = ["--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--input-size", "48",
              "--batch-size", "16", "--head-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--verbose", "0"]
    assert main([*common, "--epochs", "1"]) == 0
    first = json.loads((tmp_path / "run" / "state.json").read_text())
    assert (first["phase"], first["epochs_done"]) == ("fine_tune", 1)
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert (state["phase"], state["epochs_done"]) == ("fine_tune", 2)
    assert state["minutes"] > first["minutes"], "training time adds up across resumed sessions"
    history = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 3  # header + head epoch + two fine-tune epochs


def test_weighted_soft_crossentropy_has_the_right_gradient():
    """Weighted targets (w * q) must give w * CE(q) and a zero gradient at p == q;
    Keras' plain cross-entropy under TensorFlow back-propagates softmax - target,
    which never vanishes when the target sums to w != 1 and made training diverge."""
    import keras
    import tensorflow as tf

    from training.losses import weighted_soft_crossentropy

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


def test_age_distribution_loss_handles_exact_ages_ranges_and_missing_ages():
    import tensorflow as tf

    from training.losses import age_distribution_loss

    bins = 10
    p = tf.constant([[0.1] * 10, [0.1] * 10, [0.1] * 10, [0.0] * 8 + [0.5, 0.5]])
    exact = np.zeros(bins, np.float32)
    exact[3] = 2.0  # weight 2, all mass at bin 3
    ranged = np.zeros(bins, np.float32)
    ranged[2:6] = -0.25 * 1.5  # weight 1.5, range 2..5
    missing = np.zeros(bins, np.float32)
    inside = np.zeros(bins, np.float32)
    inside[8:10] = -0.5  # weight 1, all predicted mass already in the range
    loss = age_distribution_loss(tf.constant([exact, ranged, missing, inside]), p).numpy()
    np.testing.assert_allclose(loss[0], -2.0 * np.log(0.1), rtol=1e-5)
    np.testing.assert_allclose(loss[1], -1.5 * np.log(0.4), rtol=1e-5)
    assert loss[2] == 0.0 and loss[3] == pytest.approx(0.0, abs=1e-5)
    # The gradient of a range loss moves mass into the range.
    logits = tf.Variable(tf.zeros((1, bins)))
    with tf.GradientTape() as tape:
        value = age_distribution_loss(tf.constant([ranged]), tf.nn.softmax(logits))
    grad = tape.gradient(value, logits).numpy()[0]
    assert (grad[2:6] < 0).all() and (grad[:2] > 0).all() and (grad[6:] > 0).all()


def test_masked_metrics_skip_unlabelled_samples():
    from training.losses import MaskedAccuracy, MaskedMAE, masked_mae

    acc = MaskedAccuracy()
    acc.update_state(np.array([[0.9, 0.1], [0.0, 0.0], [0.0, 1.0]], np.float32),
                     np.array([[0.8, 0.2], [0.1, 0.9], [0.7, 0.3]], np.float32))
    assert float(acc.result()) == pytest.approx(0.5)
    mae = MaskedMAE()
    mae.update_state(np.array([[30.0], [-1.0]], np.float32), np.array([[34.0], [90.0]], np.float32))
    assert float(mae.result()) == pytest.approx(4.0)
    np.testing.assert_allclose(masked_mae(np.array([[-1.0]]), np.array([[5.0]])), [0.0])


def test_real_photo_augmentation_degrades_but_keeps_shape_and_range():
    import tensorflow as tf

    from training.augment import AugmentConfig, augment_batch

    rng = np.random.default_rng(0)
    from tests.conftest import synthetic_face

    faces = np.stack([synthetic_face(rng, 64) for _ in range(16)]).astype(np.float32)
    always = AugmentConfig(max_rotation_deg=0, zoom_range=(1, 1), max_shift=0, brightness=0, contrast=(1, 1),
                           grayscale_probability=0, blur_probability=1.0)
    blurred = augment_batch(tf.constant(faces), always).numpy()
    flipped_or_not = np.minimum(np.abs(blurred - faces).mean(), np.abs(blurred - faces[:, :, ::-1]).mean())
    assert flipped_or_not > 0.5
    # Blur lowers local contrast (mean absolute horizontal gradient).
    assert np.abs(np.diff(blurred, axis=2)).mean() < np.abs(np.diff(faces, axis=2)).mean()
    out = augment_batch(tf.constant(faces), AugmentConfig.real_photos()).numpy()
    assert out.shape == faces.shape and out.min() >= 0 and out.max() <= 255


def test_hiding_hair_covers_the_crops_sides_and_top_with_one_flat_colour_and_leaves_the_face():
    import tensorflow as tf

    from training.augment import AugmentConfig, augment_batch, hair_mask

    mask = hair_mask(100, tf.fill([2, 1, 1], 0.1), tf.constant([[[0.0]], [[0.2]]])).numpy()[..., 0]
    assert mask.shape == (2, 100, 100)
    assert mask[0, :, :10].all() and mask[0, :, 90:].all() and not mask[0, :, 10:90].any()  # no top band
    assert mask[1, :20].all() and not mask[1, 20:, 10:90].any()
    rng = np.random.default_rng(3)
    from tests.conftest import synthetic_face

    faces = np.stack([synthetic_face(rng, 64) for _ in range(8)]).astype(np.float32)
    still = dict(max_rotation_deg=0, zoom_range=(1, 1), max_shift=0, brightness=0, contrast=(1, 1),
                 grayscale_probability=0)
    out = augment_batch(tf.constant(faces), AugmentConfig(**still, hair_occlusion_probability=1.0)).numpy()
    plain = augment_batch(tf.constant(faces), AugmentConfig(**still)).numpy()
    centre = (slice(12, 64), slice(13, 51))  # inside the largest margins (20% of each side, 16% of the top)
    for got, face, before in zip(out, faces, plain):  # each call draws its own mirror flips
        assert any(np.array_equal(got[centre], view[centre]) for view in (face, face[:, ::-1]))
        edge = got[:, 0]  # the outer column is hidden at every margin drawn
        assert np.allclose(edge, edge[0]) and not np.allclose(before[:, 0], edge)


def test_hair_is_hidden_only_on_the_faces_allowed():
    """--hair-occlusion-min-age: a child's crop keeps its hair; an adult's loses it."""
    import tensorflow as tf

    from training.augment import AugmentConfig, augment_batch

    rng = np.random.default_rng(5)
    from tests.conftest import synthetic_face

    faces = np.stack([synthetic_face(rng, 64) for _ in range(6)]).astype(np.float32)
    still = dict(max_rotation_deg=0, zoom_range=(1, 1), max_shift=0, brightness=0, contrast=(1, 1),
                 grayscale_probability=0)
    allowed = [True, False, True, False, False, True]
    out = augment_batch(tf.constant(faces), AugmentConfig(**still, hair_occlusion_probability=1.0),
                        hair_allowed=tf.constant(allowed)).numpy()
    for got, face, hide in zip(out, faces, allowed):  # each image may come out mirrored
        untouched = any(np.allclose(got, view) for view in (face, face[:, ::-1]))
        assert untouched == (not hide)
        assert np.allclose(got[:, 0], got[0, 0]) == hide  # a hidden margin is one flat colour


def test_training_hides_hair_by_age_label_and_treats_unknown_ages_as_adults():
    from training.train import hair_allowed_mask

    age = np.array([3, 25, -1, -1, 17, 18, -1])
    age_low = np.array([-1, -1, -1, 10, -1, -1, 30])
    assert hair_allowed_mask(age, age_low, 18).numpy().tolist() == [False, True, True, False, False, True, True]
    assert hair_allowed_mask(age, age_low, 0).numpy().all()


def test_paired_views_can_share_their_looks_and_differ_only_in_framing():
    """shared_looks: rows 0/1, 2/3, ... get the same light, colour, occlusion and degradation,
    so two copies of a flat grey face come out identical in a pair (framing cannot show on a
    flat face) and different across pairs; without it, the two rows of a pair differ too."""
    import tensorflow as tf

    from training.augment import AugmentConfig, augment_batch

    tf.random.set_seed(3)
    flat = np.full((32, 32, 32, 3), 128.0, np.float32)
    looks = AugmentConfig.real_photos()
    looks = AugmentConfig(**{**looks.__dict__, "low_resolution_probability": 0.0, "blur_probability": 0.0,
                             "jpeg_probability": 0.0})  # these act on a whole batch anyway; keep the check exact
    shared = augment_batch(tf.constant(flat), looks, shared_looks=True).numpy()
    pair_gap = np.abs(shared[0::2] - shared[1::2]).max(axis=(1, 2, 3))
    across_gap = np.abs(shared[0:-2:2] - shared[2::2]).mean(axis=(1, 2, 3))
    assert pair_gap.max() < 1e-3
    assert (across_gap > 0.5).mean() > 0.8
    independent = augment_batch(tf.constant(flat), looks).numpy()
    assert (np.abs(independent[0::2] - independent[1::2]).mean(axis=(1, 2, 3)) > 0.5).mean() > 0.8
    # On a real-looking face the framing still differs within a pair.
    from tests.conftest import synthetic_face

    rng = np.random.default_rng(1)
    face = synthetic_face(rng, 32).astype(np.float32)
    framing_only = AugmentConfig(brightness=0, contrast=(1, 1), grayscale_probability=0)
    twins = augment_batch(tf.constant(np.repeat(face[None], 16, 0)), framing_only, shared_looks=True).numpy()
    assert (np.abs(twins[0::2] - twins[1::2]).mean(axis=(1, 2, 3)) > 1.0).mean() > 0.8


def test_multi_source_training_with_partial_labels_and_ranges(tmp_path, monkeypatch):
    """Two prepared sources (one with gender only, one with age ranges) train, resume and export
    a card with an evaluation per source."""
    from tests.test_sources import _CentreDetector, write_labels_folder
    from training.prepare import SourceSpec, prepare_source
    from training.train import main

    genders = [{"file": f"images/{i}.jpg", "gender": "male" if i % 2 else "female", "identity": f"g{i // 2}"}
               for i in range(80)]
    ranges = [{"file": f"images/{i}.jpg", "age_low": str(10 * (i % 7)), "age_high": str(10 * (i % 7) + 9),
               "ethnicity": str(i % 5)} for i in range(80)]
    specs = [f"gen={write_labels_folder(tmp_path / 'gen', genders, 1)},weight=2",
             f"rng={write_labels_folder(tmp_path / 'rng', ranges, 2)}"]
    for text in specs:
        prepare_source(SourceSpec.parse(text), tmp_path / "prep", input_size=48, detector=_CentreDetector(),
                       progress=False)
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "absent.h5"))
    out = tmp_path / "model" / "m.keras"
    common = ["--source", specs[0], "--source", specs[1], "--prepared-dir", str(tmp_path / "prep"),
              "--run-dir", str(tmp_path / "run"), "--input-size", "48", "--batch-size", "16", "--head-epochs", "1",
              "--epoch-size", "32", "--verbose", "0", "--consistency", "2"]
    assert main([*common, "--epochs", "1"]) == 0  # resuming reloads the paired losses too
    assert main([*common, "--epochs", "2", "--resume", "--output", str(out)]) == 0
    card = json.loads((out.parent / "model_card.json").read_text())
    assert set(card["evaluations"]) == {"gen", "rng"}
    gen_val = card["evaluations"]["gen"]["val"]
    assert gen_val["n_gender"] > 0 and gen_val["gender_accuracy"] is not None and gen_val["age_mae"] is None
    rng_val = card["evaluations"]["rng"]["val"]
    assert rng_val["n_age_range"] > 0 and "in_range" in rng_val["age_range"]
    assert card["data"]["sources"]["gen"]["weight"] == 2.0
    # hair hidden on the test split's gender-labelled faces; the source without genders has none
    assert set(card["hidden_hair"]) == {"gen"} and card["hidden_hair"]["gen"]["split"] == "test"
    hair = card["hidden_hair"]["gen"]
    assert hair["n_women"] + hair["n_men"] > 0 and set(hair["sides"]) == {"women", "men"}
    assert card["training"]["machine"].endswith("no GPU") or "GPU" in card["training"]["machine"]
    assert len(card["training"]["history"]) == 3
    # A soup of the run's checkpoints, exported with a full card and no training.
    from training.soup import main as soup_main

    soup = tmp_path / "soup.keras"
    assert soup_main(["--model", str(tmp_path / "run" / "best.keras"), "--model", str(tmp_path / "run" / "last.keras"),
                      "--output", str(soup)]) == 0
    out2 = tmp_path / "model2" / "m.keras"
    assert main([*common, "--epochs", "2", "--export-from", str(soup), "--output", str(out2)]) == 0
    card2 = json.loads((out2.parent / "model_card.json").read_text())
    assert card2["weights"] == str(soup) and set(card2["evaluations"]) == {"gen", "rng"}
    assert len(card2["training"]["history"]) == 3  # nothing more was trained
    # the soup's recipe (written beside it) reaches the card; the Model page names its ingredients
    assert card2["training"]["soup"] == {"models": [str(tmp_path / "run" / "best.keras"),
                                                    str(tmp_path / "run" / "last.keras")], "weights": [0.5, 0.5]}
    assert "soup" not in card["training"]
    # --recalibrate refits an exported model's read-out: the model file stays, the card keeps what
    # no read-out changes (training record, heat-map studies) and redoes the figures that depend on it.
    from model.calibration import calibration_path

    card2_path = out2.parent / "model_card.json"
    card2_path.write_text(json.dumps({**card2, "faithfulness": {"kept": True}}))
    model_bytes = out2.read_bytes()
    calibration_path(out2).unlink()
    assert main([*common, "--recalibrate", str(out2)]) == 0
    assert out2.read_bytes() == model_bytes and calibration_path(out2).is_file()
    card3 = json.loads(card2_path.read_text())
    assert card3["faithfulness"] == {"kept": True} and card3["training"] == card2["training"]
    assert card3["evaluations"] == card2["evaluations"]  # same model, same data, same read-out code
    fitted = card3["calibration"]["fitted"]
    assert fitted["ethnicity_mix"] == "training" and fitted["ethnicity_prior_power"] == 0.0
    assert len(fitted["ethnicity_by_prior_power"]) == 11  # the trade-off is on the card either way
    assert main([*common, "--recalibrate", str(out2), "--ethnicity-mix", "between"]) == 0
    served = json.loads(card2_path.read_text())["calibration"]["fitted"]["ethnicity_prior_power"]
    from model.calibration import load_for_model

    assert load_for_model(out2).ethnicity_prior_power == served
    with pytest.raises(SystemExit, match="another model"):  # never rewrites another model's card
        main([*common, "--recalibrate", str(out), "--model-card", str(card2_path)])
    # The evaluation tools read the prepared crops at the model's own input size (48 here).
    from training.evaluate import main as evaluate_main
    from training.robustness import main as robustness_main

    scores = tmp_path / "val.json"
    assert evaluate_main(["--source", specs[0], "--prepared-dir", str(tmp_path / "prep"), "--split", "val",
                          "--model", str(out), "--quiet", "--json", str(scores)]) == 0
    assert json.loads(scores.read_text())["sources"]["gen"]["n_gender"] == gen_val["n_gender"]
    assert robustness_main(["--source", specs[1], "--prepared-dir", str(tmp_path / "prep"), "--model", str(out),
                            "--limit", "4", "--views", "3", "--no-tta"]) == 0


def test_average_weights_mixes_tensors_and_refuses_mismatches():
    from training.soup import average_weights

    a = [np.zeros((2, 2), np.float32), np.ones(3, np.float32)]
    b = [np.ones((2, 2), np.float32), np.full(3, 3.0, np.float32)]
    mixed = average_weights([a, b], [0.25, 0.75])
    np.testing.assert_allclose(mixed[0], 0.75)
    np.testing.assert_allclose(mixed[1], 2.5)
    assert mixed[0].dtype == np.float32
    with pytest.raises(ValueError, match="sum to 1"):
        average_weights([a, b], [0.5, 0.6])
    with pytest.raises(ValueError, match="architecture"):
        average_weights([a, [np.zeros((3, 2))] + b[1:]], [0.5, 0.5])


def test_training_stream_draws_new_images_and_augmentations_every_epoch(monkeypatch):
    """Keras reads the training stream with steps_per_epoch through one iterator; a stream that
    restarted each epoch would replay the same draws and augmentations (tf.data re-seeds a new
    iterator's random ops), and the model would memorise them."""
    import keras

    from training.train import TrainConfig, make_dataset, sample_weights

    keras.utils.set_random_seed(7)
    arrays = _tiny_arrays(40, seed=0)
    labels = arrays.labels
    cfg = TrainConfig(data_dir="x", batch_size=8, epoch_size=16, input_size=32)
    ds = make_dataset(arrays, sample_weights(labels, 0.5), cfg, training=True)
    stream = iter(ds)
    epoch1 = [next(stream)[0].numpy() for _ in range(2)]
    epoch2 = [next(stream)[0].numpy() for _ in range(2)]  # an endless stream: no StopIteration
    assert not any(np.array_equal(a, b) for a, b in zip(epoch1, epoch2))


def test_pair_divergence_is_zero_for_agreeing_views_and_grows_with_disagreement():
    from keras import ops

    from training.losses import PairConsistentLoss, pair_divergence

    same = np.array([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4], [0.6, 0.4]], np.float32)
    assert np.allclose(ops.convert_to_numpy(pair_divergence(same)), 0.0, atol=1e-6)
    near = np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.6, 0.4]], np.float32)
    far = np.array([[0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]], np.float32)
    d_near, d_far = (ops.convert_to_numpy(pair_divergence(x)) for x in (near, far))
    assert d_near[0] == d_near[1] > 0 and d_near[2] == d_near[3] == 0  # each pair's value on both rows
    assert d_far[0] > 5 * d_near[0]
    target = np.array([[0.0, 1.0]] * 4, np.float32)
    loss = PairConsistentLoss("weighted_soft_crossentropy", weight=3.0)
    plain = PairConsistentLoss("weighted_soft_crossentropy", weight=0.0)
    assert float(loss(target, far)) == pytest.approx(float(plain(target, far)) + 3.0 * d_far.mean(), rel=1e-5)
    assert PairConsistentLoss.from_config(loss.get_config()).weight == 3.0
    with pytest.raises(ValueError, match="unknown base loss"):
        PairConsistentLoss("mse")


def test_consistency_batches_hold_two_views_of_each_face():
    """Training rows 2i and 2i+1 are one face, augmented twice; validation rows are the face twice as is."""
    import keras

    from training.train import TrainConfig, make_dataset, sample_weights

    keras.utils.set_random_seed(3)
    n = 12
    arrays = _tiny_arrays(n, seed=1)
    labels = arrays.labels
    cfg = TrainConfig(data_dir="x", batch_size=8, epoch_size=16, input_size=32, consistency=1.0)
    x, y = next(iter(make_dataset(arrays, sample_weights(labels, 0.5), cfg, training=True)))
    x, age = x.numpy(), y["age"].numpy()[:, 0]
    assert x.shape[0] == 8 and np.array_equal(age[0::2], age[1::2])
    assert not np.array_equal(x[0], x[1])  # two independent augmentations
    ones = {k: np.ones(n, np.float32) for k in ("age", "gender", "ethnicity")}
    batches = list(make_dataset(arrays, ones, cfg, training=False))
    xv = np.concatenate([b[0].numpy() for b in batches])
    assert len(xv) == 2 * n and np.array_equal(xv[0::2], xv[1::2])
    assert np.array_equal(xv[0::2], arrays.images.astype(np.float32))
    with pytest.raises(ValueError, match="even"):
        make_dataset(arrays, ones, TrainConfig(data_dir="x", batch_size=7, consistency=1.0), training=False)


def _tiny_arrays(n: int, seed: int):
    """n random 32x32 faces with every label, one source."""
    from training.train import TrainArrays

    rng = np.random.default_rng(seed)
    ages = rng.integers(1, 80, n).astype(np.int32)
    labels = {"age": ages, "age_low": ages, "age_high": ages, "gender": rng.integers(0, 2, n).astype(np.int32),
              "ethnicity": rng.integers(0, 5, n).astype(np.int32)}
    return TrainArrays(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), labels, np.zeros(n, np.int32), ("a",))


def test_distilled_targets_blend_each_label_with_the_teacher_and_keep_age_ranges():
    """Labelled rows: (1 - b) * label + b * w * teacher (still summing to w); unlabelled rows: b * teacher;
    an age range keeps its own (negative) target."""
    from model.labels import NUM_AGE_BINS
    from training.train import TrainConfig, make_dataset, sample_weights

    n = 8
    arrays = _tiny_arrays(n, seed=4)
    labels = arrays.labels = {k: v.copy() for k, v in arrays.labels.items()}
    labels["gender"][[1, 2]] = -1  # no gender
    labels["age"][3] = -1  # an age range only
    labels["age_low"][3], labels["age_high"][3] = 30, 39
    for key in ("age", "age_low", "age_high"):
        labels[key][4] = -1  # no age at all
    rng = np.random.default_rng(0)

    def probabilities(width):
        p = rng.random((n, width)).astype(np.float32)
        return p / p.sum(axis=1, keepdims=True)

    teacher = {"age_dist": probabilities(NUM_AGE_BINS), "gender": probabilities(2), "ethnicity": probabilities(5)}
    weights = sample_weights(labels, 0.5)
    beta = 0.3
    cfg = TrainConfig(data_dir="x", batch_size=n, input_size=32, distill_weight=beta)
    _, plain = next(iter(make_dataset(arrays, weights, cfg, training=False)))
    _, taught = next(iter(make_dataset(arrays, weights, cfg, training=False, teacher=teacher)))
    plain, taught = ({k: v.numpy() for k, v in d.items()} for d in (plain, taught))
    g = plain["gender"].sum(axis=1)
    labelled = labels["gender"] >= 0
    expected = (1 - beta) * plain["gender"] + beta * g[:, None] * teacher["gender"]
    assert np.allclose(taught["gender"][labelled], expected[labelled], atol=1e-6)
    assert np.allclose(taught["gender"][~labelled], beta * teacher["gender"][~labelled], atol=1e-6)
    assert np.allclose(taught["gender"][labelled].sum(axis=1), g[labelled], atol=1e-5)
    assert np.allclose(taught["ethnicity"].sum(axis=1), plain["ethnicity"].sum(axis=1), atol=1e-5)
    assert np.array_equal(taught["age_dist"][3], plain["age_dist"][3]) and plain["age_dist"][3].sum() < 0
    assert np.allclose(taught["age_dist"][4], beta * teacher["age_dist"][4], atol=1e-6)
    exact = labels["age"] >= 0
    assert np.allclose(taught["age_dist"][exact].sum(axis=1), plain["age_dist"][exact].sum(axis=1), atol=1e-5)
    assert np.array_equal(taught["age"], plain["age"])  # the read-out's L1 keeps the label alone


def test_teacher_outputs_are_flip_averaged_and_cached_per_teacher_and_faces(tmp_path, monkeypatch):
    import keras

    from model.architecture import build_model
    from model.inference import Predictor
    from training import distill

    keras.utils.set_random_seed(5)
    path = tmp_path / "teacher.keras"
    build_model(32).save(path)
    faces = _tiny_arrays(10, seed=6).images
    out = distill.teacher_outputs(path, faces, tmp_path / "run", batch_size=4)
    raw = Predictor(keras.saving.load_model(path, compile=False), flip_tta=True).raw(faces)
    for head in distill.DISTILLED_HEADS:
        assert out[head].shape == raw[head].shape and np.allclose(out[head], raw[head], atol=1e-5)
    assert (tmp_path / "run" / "teacher_outputs.npz").is_file()
    monkeypatch.setattr("model.architecture.load_model", lambda *a, **k: pytest.fail("cache not used"))
    again = distill.teacher_outputs(path, faces, tmp_path / "run")
    assert all(np.array_equal(again[h], out[h]) for h in distill.DISTILLED_HEADS)
    with pytest.raises(pytest.fail.Exception, match="cache not used"):  # other faces: recomputed
        distill.teacher_outputs(path, faces[::-1].copy(), tmp_path / "run")


def test_distillation_run_trains_and_resumes_from_a_teacher(tmp_path, monkeypatch):
    from tests.conftest import write_utkface_folder
    from training.train import main

    data = tmp_path / "data"
    write_utkface_folder(data, n=60, seed=13)
    monkeypatch.setenv("IMAGENET_WEIGHTS", str(tmp_path / "absent.h5"))
    common = ["--data-dir", str(data), "--input-size", "48", "--batch-size", "16", "--head-epochs", "1",
              "--cache-dir", str(tmp_path / "cache"), "--verbose", "0"]
    assert main([*common, "--run-dir", str(tmp_path / "teacher"), "--epochs", "1"]) == 0
    student = [*common, "--run-dir", str(tmp_path / "student"), "--distill-from", str(tmp_path / "teacher" / "last.keras"),
               "--distill-weight", "0.7", "--init-model", str(tmp_path / "teacher" / "last.keras")]
    assert main([*student, "--epochs", "1"]) == 0
    assert (tmp_path / "student" / "teacher_outputs.npz").is_file()
    assert main([*student, "--epochs", "2", "--resume"]) == 0
    state = json.loads((tmp_path / "student" / "state.json").read_text())
    assert (state["phase"], state["epochs_done"]) == ("fine_tune", 2)
