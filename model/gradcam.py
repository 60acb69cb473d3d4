"""Grad-CAM: where the network looked, for each head, as a heat map on the face crop.

:class:`GradCamExplainer` turns a face input into a heat map in [0, 1] on the
128x128 face crop (tf-keras-vis Grad-CAM, Grad-CAM++ or Faster Score-CAM). Drawing
it on the photo (warp, overlay, files) is model.heatmap_draw.

What each head's map explains (one head at a time; the other outputs score zero):

* gender / ethnicity: the log-odds of the target class against the others,
  ``z_t - logsumexp(z_others)``, from the pre-softmax logits. A saturated softmax
  (p = 0.9999) has vanishing gradients; log-odds do not, and unlike a raw logit they
  ignore evidence shared by all classes. Score-CAM scores the class probability.
* age: ``log(1 + expected age)``, the expected age taken by the model's own ``age``
  layer. Grad-CAM++ exponentiates its score, so the quantity it explains is
  ``1 + expected age`` itself. Score-CAM scores the expected age in years. Warm areas
  are those that push the estimate *up*.

Speed: the backbone (image -> ``out_relu``, (1, 4, 4, 1280)) runs once per face in
a compiled call and is cached; tf-keras-vis then differentiates only a small head
model (``out_relu`` activations -> logits of the three heads). That is exactly the
gradient tf-keras-vis would compute on the whole network (the activations do not
depend on the heads), at a fraction of the cost, and the heads share one backbone
pass. The logits come from layers that share the trained Dense weights, so the
model is never cloned or modified (``model_modifier=None``; the Analyze page keeps
using the same model object). ``python -m model.bench --gradcam`` times it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.scorecam import Scorecam
from tf_keras_vis.utils.scores import InactiveScore

from model.architecture import LAST_CONV_LAYER
from model.labels import HEAD_NAMES, check_head
from model.lru import LRUCache
from model.results import CAM_METHODS, DEFAULT_CAM_METHOD

# --- configuration ---------------------------------------------------------------------------

#: The softmax Dense layer behind each head; its logits are what Grad-CAM differentiates.
#: ("age" is the expected value of the ``age_dist`` softmax.)
HEAD_LOGIT_LAYERS: dict[str, str] = {"age": "age_dist", "gender": "gender", "ethnicity": "ethnicity"}
#: ``Explanation.target_name`` of an age map.
AGE_TARGET_NAME: str = "expected age"
#: Faster Score-CAM: mask with this many highest-variance ``out_relu`` channels
#: (of 1280) rather than all, i.e. this many extra forward passes per head.
SCORECAM_MAX_N: int = 32
#: Heat maps kept per explainer (a 128x128 float32 map is 64 KB).
HEATMAP_CACHE_SIZE: int = 256
#: Faces whose backbone activations are kept (for explaining more heads of the same face).
ACTIVATION_CACHE_SIZE: int = 16

ScoreTable = dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]


# --- scores: one function per head, dispatched by tables (tf ops on (B, C) tensors) -----------


def _log_odds(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """(B, C) logits, (B,) class indices -> (B,) log-odds of each row's target class."""
    onehot = tf.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    target_logit = tf.reduce_sum(logits * onehot, axis=-1)
    others = tf.where(onehot > 0, tf.constant(-np.inf, logits.dtype), logits)
    return target_logit - tf.reduce_logsumexp(others, axis=-1)

def _class_probability(probabilities: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(probabilities * tf.one_hot(targets, probabilities.shape[-1], dtype=probabilities.dtype), -1)



def _score_tables(age_layer: keras.layers.Dense) -> tuple[ScoreTable, ScoreTable]:
    """Scores of the gradient methods (on logits) and of Score-CAM (on probabilities,
    which tf-keras-vis takes softmax of first). The expected age is the model's own
    ``age`` layer (its kernel holds the bin ages) applied to the age distribution."""

    def years(probabilities: tf.Tensor) -> tf.Tensor:
        return keras.ops.matmul(probabilities, age_layer.kernel)[:, 0]

    def log_expected_age(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return tf.math.log1p(years(tf.nn.softmax(logits, axis=-1)))

    def age_years(probabilities: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return years(probabilities)

    gradient = {"age": log_expected_age, "gender": _log_odds, "ethnicity": _log_odds}
    probability = {"age": age_years, "gender": _class_probability, "ethnicity": _class_probability}
    return gradient, probability


class _DenseLogits(keras.layers.Layer):
    """Pre-softmax output of an existing Dense layer, sharing (not copying) its weights."""

    def __init__(self, dense: keras.layers.Dense, **kwargs: Any):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs: Any) -> Any:
        logits = keras.ops.matmul(inputs, self.dense.kernel)
        return logits if self.dense.bias is None else logits + self.dense.bias


class _QuietModel(keras.Model):
    """A functional model whose ``predict`` prints no progress bar (Score-CAM calls it)."""

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["verbose"] = 0
        return super().predict(x, *args, **kwargs)


def _digest(face_input: np.ndarray) -> str:
    return hashlib.blake2b(face_input.tobytes(), digest_size=16).hexdigest()


def _upsample_cam(cam: np.ndarray, size: int) -> np.ndarray:
    """(h, w) raw CAM -> (size, size) float32 in [0, 1], scaled by its peak (0 stays 0).

    Bicubic with pixel-centre alignment: each of the 4x4 cells covers its 32x32
    patch of the crop (scipy's corner-aligned zoom would shift it).
    """
    cam = np.nan_to_num(np.asarray(cam, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    up = np.clip(cv2.resize(np.maximum(cam, 0.0), (size, size), interpolation=cv2.INTER_CUBIC), 0.0, None)
    peak = float(up.max())
    return (up / peak if peak > 0 else np.zeros_like(up)).astype(np.float32)



class GradCamExplainer:
    """Heat maps of a facelens model's three heads, with tf-keras-vis built once.

    ``heatmap`` / ``heatmaps`` cache results per (face pixels, head, target, method),
    so re-rendering (another opacity) or explaining another head of the same face
    is cheap. Arrays returned from the cache are read-only.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        scorecam_max_n: int = SCORECAM_MAX_N,
        cache_size: int = HEATMAP_CACHE_SIZE,
        layer: str = LAST_CONV_LAYER,
    ):
        self.model = model
        self.input_size = int(model.input_shape[1])
        self.scorecam_max_n = scorecam_max_n
        self.layer = layer
        conv = model.get_layer(layer)
        logits = {head: _DenseLogits(model.get_layer(HEAD_LOGIT_LAYERS[head]), name=f"{head}_logits")
                  for head in HEAD_NAMES}
        head_inputs = [model.get_layer(HEAD_LOGIT_LAYERS[head]).input for head in HEAD_NAMES]
        #: (h, w) of the CAM grid: out_relu's spatial size, input / 32 (5x5 for the shipped 160 px input).
        self.cam_shape: tuple[int, int] = (int(conv.output.shape[1]), int(conv.output.shape[2]))

        # image (N, S, S, 3) float 0..255 -> out_relu (N, h, w, 1280), compiled.
        backbone = keras.Model(model.inputs, conv.output, name="facelens_cam_backbone")
        image_spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
        self._backbone = tf.function(lambda x: backbone(x, training=False), input_signature=[image_spec])
        # image -> the model's own outputs (age, age_dist, gender, ethnicity), compiled.
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[image_spec])

        # out_relu activations -> logits per head: what tf-keras-vis differentiates. The
        # identity layer carries the name tf-keras-vis looks up as the penultimate layer.
        tail = keras.Model(conv.output, head_inputs, name="facelens_cam_tail")
        activations = keras.Input(conv.output.shape[1:], name="activations")
        features = keras.layers.Identity(name=layer)(activations)
        hidden = tail(features)
        self._head_model = keras.Model(
            activations, [logits[head](h) for head, h in zip(HEAD_NAMES, hidden)], name="facelens_cam_heads"
        )
        #: image -> [age_dist, gender, ethnicity] logits: the whole network without its
        #: softmaxes (Score-CAM masks the image, so it needs all of it).
        self.logit_model = _QuietModel(
            model.inputs, [logits[head](h) for head, h in zip(HEAD_NAMES, head_inputs)], name="facelens_cam_logits"
        )
        self._visualizers: dict[str, Gradcam | GradcamPlusPlus | Scorecam] = {
            "gradcam": Gradcam(self._head_model, model_modifier=None, clone=False),
            "gradcam++": GradcamPlusPlus(self._head_model, model_modifier=None, clone=False),
            "scorecam": Scorecam(self.logit_model, model_modifier=None, clone=False),
        }
        self._gradient_scores, self._probability_scores = _score_tables(model.get_layer("age"))
        self._maps = LRUCache(cache_size)
        self._activations = LRUCache(ACTIVATION_CACHE_SIZE)
        self._outputs = LRUCache(ACTIVATION_CACHE_SIZE)

    # -- public -------------------------------------------------------------------------------

    def heatmap(
        self, face_input: np.ndarray, head: str, target: int | str | None = None, method: str = DEFAULT_CAM_METHOD
    ) -> np.ndarray:
        """(S, S, 3) uint8 face input -> (S, S) float32 heat map in [0, 1] for one head."""
        return self.heatmaps(face_input, (head,), method, {head: target})[head]

    def heatmaps(
        self,
        face_input: np.ndarray,
        heads: Sequence[str] = HEAD_NAMES,
        method: str = DEFAULT_CAM_METHOD,
        targets: Mapping[str, int | str | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Heat maps of several heads of one face, computed in one batched call.

        ``targets`` maps a head to a class index or name; missing or None means the
        model's predicted class. Returns {head: (S, S) float32 in [0, 1]}.
        """
        face = self._check_face(face_input)
        method = check_method(method)
        targets = targets or {}
        key = _digest(face)
        jobs: list[tuple[str, int | None]] = []
        out: dict[str, np.ndarray] = {}
        for head in heads:
            index, _ = self.resolve_target(head, targets.get(head), face)
            cached = self._maps.get((key, head, index, method))
            if cached is not None:
                out[head] = cached
            elif (head, index) not in jobs:
                jobs.append((head, index))
        if jobs:
            for (head, index), cam in zip(jobs, self._cams(face, key, jobs, method)):
                heat = _upsample_cam(cam, self.input_size)
                heat.setflags(write=False)
                self._maps.put((key, head, index, method), heat)
                out[head] = heat
        return {head: out[head] for head in heads}

    def resolve_target(
        self, head: str, target: int | str | np.integer | None, face_input: np.ndarray | None = None
    ) -> tuple[int | None, str]:
        """A head's target as (class index, class name); None = the predicted class.

        Age has no classes: the target is ignored and the map explains the expected age.
        """
        classes = check_head(head)
        if not classes:
            return None, AGE_TARGET_NAME
        if target is None:
            if face_input is None:
                raise ValueError(f"the {head} head needs a target class or a face to predict one")
            index = int(np.argmax(self.head_outputs(face_input[None])[head][0]))
        elif isinstance(target, str):
            if target not in classes:
                raise ValueError(f"unknown {head} class {target!r}; expected one of {classes}")
            index = classes.index(target)
        elif isinstance(target, int | np.integer) and not isinstance(target, bool):
            index = int(target)
            if not 0 <= index < len(classes):
                raise ValueError(f"{head} class index must be 0..{len(classes) - 1}, got {index}")
        else:
            raise TypeError(f"target must be a class index, a class name or None, got {target!r}")
        return index, classes[index]

    def head_outputs(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """(N, S, S, 3) uint8 faces -> {"age": (N,) years, "gender": (N, 2), "ethnicity": (N, 5)}.

        The plain model (no flip averaging): the forward pass the maps explain.
        Single faces are cached.
        """
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, {self.input_size}, {self.input_size}, 3) faces, got {faces.shape}")
        key = _digest(faces) if len(faces) == 1 else None
        cached = self._outputs.get(key) if key else None
        if cached is not None:
            return cached
        age, _, gender, ethnicity = self._forward(tf.convert_to_tensor(faces, tf.float32))
        out = {"age": age.numpy()[:, 0], "gender": gender.numpy(), "ethnicity": ethnicity.numpy()}
        if key:
            self._outputs.put(key, out)
        return out

    def explained_output(self, faces: np.ndarray, head: str, target: int | None) -> np.ndarray:
        """(N,) what a map of ``head`` explains: target class probability, or expected age in years."""
        classes = check_head(head)
        values = self.head_outputs(faces)[head]
        if not classes:
            return values
        if target is None:
            raise ValueError(f"the {head} head needs a class index")
        return values[:, int(target)]

    def clear_cache(self) -> None:
        """Forget cached maps, activations and outputs (benchmarks start cold)."""
        for cache in (self._maps, self._activations, self._outputs):
            cache.clear()

    # -- internals ----------------------------------------------------------------------------

    def _check_face(self, face_input: np.ndarray) -> np.ndarray:
        face = np.asarray(face_input)
        if face.shape != (self.input_size, self.input_size, 3):
            raise ValueError(f"face_input must be ({self.input_size}, {self.input_size}, 3), got {face.shape}")
        if face.dtype != np.uint8:
            face = np.clip(face, 0, 255).astype(np.uint8)
        return face

    def _backbone_activations(self, face: np.ndarray, key: str) -> tf.Tensor:
        """(1, h, w, c) activations of ``self.layer`` for one face, cached per face."""
        return self._activations.get_or_compute(
            key, lambda: self._backbone(tf.convert_to_tensor(face[None], tf.float32))
        )

    def _scores(self, jobs: list[tuple[str, int | None]], table: Mapping[str, Callable]) -> list[Callable]:
        """One score function per head-model output: sample i scores only jobs[i]'s head."""
        targets = tf.constant([index or 0 for _, index in jobs], tf.int32)
        scores: list[Callable] = []
        for head in HEAD_NAMES:
            mask = [1.0 if job_head == head else 0.0 for job_head, _ in jobs]
            if not any(mask):
                scores.append(InactiveScore())
                continue
            score, weight = table[head], tf.constant(mask)
            scores.append(lambda output, score=score, weight=weight: score(output, targets) * weight)
        return scores

    def _cams(self, face: np.ndarray, key: str, jobs: list[tuple[str, int | None]], method: str) -> np.ndarray:
        """Raw CAMs (B, h, w) for B (head, target) jobs of one face: one tf-keras-vis call."""
        common = {"penultimate_layer": self.layer, "seek_penultimate_conv_layer": False,
                  "expand_cam": False, "normalize_cam": False}
        if method == "scorecam":
            seed = np.repeat(face[None].astype(np.float32), len(jobs), axis=0)
            cams = self._visualizers[method](self._scores(jobs, self._probability_scores), seed,
                                             max_N=self.scorecam_max_n, batch_size=64, **common)
        else:
            seed = tf.repeat(self._backbone_activations(face, key), len(jobs), axis=0)
            cams = self._visualizers[method](self._scores(jobs, self._gradient_scores), seed, **common)
        return np.asarray(cams, np.float32).reshape(len(jobs), *self.cam_shape)


def check_method(method: str) -> str:
    if method not in CAM_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(CAM_METHODS)}")
    return method
