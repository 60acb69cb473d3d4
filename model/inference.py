"""Batched, compiled inference: one engine call per batch of faces.

``model.predict`` costs ~80 ms of overhead per call; a ``tf.function`` with a fixed
signature ~10 ms; the same network compiled for LiteRT (:mod:`model.litert`, the
default engine) runs a lone face with its mirror in ~4-8 ms on 2 cores. All faces of
a photo share one call. Optional horizontal-flip test-time averaging runs both views
in the same call. The same call returns the pooled backbone features, from which
:mod:`model.calibration` measures how unfamiliar a face is and corrects the read-out.
"""

from __future__ import annotations

import logging
import threading

import keras
import numpy as np
import tensorflow as tf

from model import settings
from model.architecture import OUTPUT_NAMES
from model.calibration import Calibration
from model.results import HeadOutputs

#: The layer whose output is the face's feature vector (see model.architecture).
FEATURE_LAYER = "pool"
#: "litert": the flatbuffer of model.litert (fast); "keras": a tf.function over the Keras
#: model (the reference; also the fallback when conversion fails).
ENGINES: tuple[str, ...] = ("litert", "keras")

log = logging.getLogger(__name__)


class Predictor:
    """Wrap a facelens model in a compiled batched call."""

    def __init__(self, model: keras.Model, flip_tta: bool = True, batch_size: int = 64,
                 calibration: Calibration | None = None, engine: str | None = None):
        self.engine = engine or settings.inference_engine()
        if self.engine not in ENGINES:
            raise ValueError(f"unknown inference engine {self.engine!r} (choose from {', '.join(ENGINES)})")
        self.model = model
        self.flip_tta = flip_tta
        self.batch_size = batch_size
        self.calibration = calibration or Calibration()
        self.input_size = int(model.input_shape[1])
        names = {layer.name for layer in model.layers}
        self._names = list(OUTPUT_NAMES)
        #: The network each engine runs: the model, plus its pooled features as one more output.
        self.network = model
        if FEATURE_LAYER in names:  # one graph, one more output: the features cost nothing extra
            self.network = keras.Model(model.inputs, [*model.outputs, model.get_layer(FEATURE_LAYER).output])
            self._names.append("features")
        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._call = tf.function(self._forward, input_signature=[spec], reduce_retracing=True)
        self._litert = None  # converted on first use (seconds; cached on disk by model.litert)
        self._litert_lock = threading.Lock()

    def _litert_runner(self):
        """The LiteRT runner, converting on first use; None after a failed conversion."""
        with self._litert_lock:
            if self._litert is None and self.engine == "litert":
                from model import litert

                try:
                    content = litert.cached_flatbuffer(self.network, settings.cache_dir() / "litert")
                    self._litert = litert.LiteRTRunner(content)
                except Exception as exc:  # noqa: BLE001 - any converter failure: serve with Keras
                    log.warning("LiteRT conversion failed, serving with Keras instead: %s", exc)
                    self.engine = "keras"
            return self._litert

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One float32 batch of faces -> outputs by name (flip-averaged when asked)."""
        runner = self._litert_runner() if self.engine == "litert" else None
        if runner is None:
            return {name: value.numpy() for name, value in self._call(tf.convert_to_tensor(batch)).items()}
        n = len(batch)
        views = np.concatenate([batch, batch[:, :, ::-1]]) if self.flip_tta else batch
        outs = runner(views)
        if self.flip_tta:
            outs = [(out[:n] + out[n:]) / 2.0 for out in outs]
        return dict(zip(self._names, outs))

    def _forward(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.flip_tta:
            n = tf.shape(images)[0]
            both = tf.concat([images, tf.reverse(images, axis=[2])], axis=0)
            outs = self.network(both, training=False)
            return {name: (o[:n] + o[n:]) / 2.0 for name, o in zip(self._names, outs)}
        outs = self.network(images, training=False)
        return dict(zip(self._names, outs))

    def raw(self, faces: np.ndarray, progress: str | None = None) -> dict[str, np.ndarray]:
        """(N, S, S, 3) uint8 prepared faces -> raw outputs by name (numpy).

        ``progress`` names a tqdm bar over the batches, for the thousands of faces
        training, calibration and export score (the app's few faces need none).
        """
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3) faces, got {faces.shape}")
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self._names}
        starts = range(0, len(faces), self.batch_size)
        if progress is not None:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=progress, unit="batch")
        for start in starts:
            batch = faces[start : start + self.batch_size].astype(np.float32)
            for name, value in self._run(batch).items():
                chunks[name].append(value)
        if not len(faces):  # each output's own width, as the network declares it
            return {name: np.zeros((0, out.shape[-1])) for name, out in zip(self._names, self.network.outputs)}
        return {name: np.concatenate(parts) for name, parts in chunks.items()}

    def __call__(self, faces: np.ndarray) -> HeadOutputs:
        return self.outputs(self.raw(faces))

    def outputs(self, raw: dict[str, np.ndarray], calibration: Calibration | None = None) -> HeadOutputs:
        """Raw outputs -> answers, corrected by ``calibration`` (default: this predictor's)."""
        out = (calibration or self.calibration).apply(raw["age_dist"], raw["gender"], raw["ethnicity"],
                                                      raw.get("features"))
        return HeadOutputs(age=out["age"], age_interval=out["age_interval"], age_dist=out["age_dist"],
                           gender=out["gender"], ethnicity=out["ethnicity"], unfamiliarity=out["unfamiliarity"])
