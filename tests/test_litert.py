"""The LiteRT engine: same answers as the Keras reference, converted once, safe to share."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from model import litert, settings
from model.settings import INPUT_SIZE

pytestmark = pytest.mark.slow  # TensorFlow, a model of the shipped shape and its conversion


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.uint8)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_litert_gives_the_keras_answers(untrained_model, flip_tta):
    from model.inference import Predictor

    fast = Predictor(untrained_model, flip_tta=flip_tta, batch_size=2, engine="litert")
    reference = Predictor(untrained_model, flip_tta=flip_tta, batch_size=2, engine="keras")
    for n in (1, 3, 5):  # batch sizes change between calls; 5 faces span three batches of 2
        faces = _faces(n, seed=n)
        got, want = fast.raw(faces), reference.raw(faces)
        assert fast.engine == "litert" and sorted(got) == sorted(want)
        for name in want:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], atol=2e-4, rtol=1e-4, err_msg=name)
    assert len(fast(np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))) == 0


def test_engine_setting_and_unknown_engine(untrained_model, monkeypatch):
    from model.inference import Predictor

    monkeypatch.delenv("FACELENS_ENGINE", raising=False)
    assert settings.inference_engine() == "litert"
    monkeypatch.setenv("FACELENS_ENGINE", " Keras ")
    assert settings.inference_engine() == "keras"
    assert Predictor(untrained_model).engine == "keras"
    monkeypatch.setenv("FACELENS_ENGINE", "onnx")
    with pytest.raises(ValueError, match="unknown inference engine 'onnx'"):
        Predictor(untrained_model)


def test_flatbuffer_is_cached_by_weights_and_pruned(untrained_model, tmp_path, monkeypatch):
    from model.architecture import build_model

    cache = tmp_path / "litert"
    first = litert.cached_flatbuffer(untrained_model, cache)
    entries = list(cache.glob("*.tflite"))
    assert len(entries) == 1 and entries[0].read_bytes() == first
    assert entries[0].stem == litert.model_key(untrained_model)

    def no_conversion(net):
        raise AssertionError("converted again although cached")

    monkeypatch.setattr(litert, "convert", no_conversion)
    assert litert.cached_flatbuffer(untrained_model, cache) == first  # a second load reads the file

    other = build_model(INPUT_SIZE)  # new random weights: a new key
    assert litert.model_key(other) != litert.model_key(untrained_model)
    monkeypatch.setattr(litert, "KEEP_CACHED", 2)
    for i in range(3):  # stand-ins for three more models; only the newest two stay
        monkeypatch.setattr(litert, "model_key", lambda net, i=i: f"fake{i}")
        monkeypatch.setattr(litert, "convert", lambda net, i=i: f"model {i}".encode())
        litert.cached_flatbuffer(other, cache)
    assert sorted(p.name for p in cache.glob("*.tflite")) == ["fake1.tflite", "fake2.tflite"]
    assert not list(cache.glob("*.part"))


def test_model_key_ignores_names_but_not_outputs(untrained_model_path):
    import keras

    from model.architecture import load_model

    a, b = load_model(untrained_model_path), load_model(untrained_model_path)
    assert litert.model_key(a) == litert.model_key(b)
    with_features = keras.Model(a.inputs, [*a.outputs, a.get_layer("pool").output])
    assert litert.model_key(with_features) != litert.model_key(a)


def test_failed_conversion_falls_back_to_keras(untrained_model, monkeypatch, caplog):
    from model.inference import Predictor

    def broken(net):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(litert, "convert", broken)
    monkeypatch.setattr(litert, "model_key", lambda net: "never-cached")
    predictor = Predictor(untrained_model, flip_tta=False, engine="litert")
    faces = _faces(2)
    with caplog.at_level("WARNING"):
        got = predictor.raw(faces)
    assert predictor.engine == "keras" and "converter exploded" in caplog.text
    want = Predictor(untrained_model, flip_tta=False, engine="keras").raw(faces)
    np.testing.assert_allclose(got["gender"], want["gender"], atol=1e-6)


def test_one_predictor_serves_threads_at_once(untrained_model):
    """The app shares one predictor between sessions and the live video thread."""
    from model.inference import Predictor

    predictor = Predictor(untrained_model, flip_tta=True, engine="litert")
    inputs = [_faces(n, seed=10 + n) for n in (1, 2, 3, 4)]
    serial = [predictor.raw(faces)["age_dist"] for faces in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = predictor.raw(inputs[i])["age_dist"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, want in enumerate(serial):
        np.testing.assert_array_equal(results[i], want)
