"""Grad-CAM explanations: where the network looked, for each head.

Compute is split from rendering. :class:`GradCamExplainer` turns a face input into a
heat map in [0, 1] on the 128x128 face crop (tf-keras-vis Grad-CAM, Grad-CAM++ or
Faster Score-CAM); :func:`warp_to_photo` carries it back into photo pixels and
:func:`overlay` colours it onto the photo. :func:`faithfulness` checks a map is
honest: hiding its hottest pixels must hurt the explained output more than hiding
random ones.

What each head's map explains (one head at a time; the other outputs score zero):

* gender / ethnicity: the log-odds of the target class against the others,
  ``z_t - logsumexp(z_others)``, from the pre-softmax logits. A saturated softmax
  (p = 0.9999) has vanishing gradients; log-odds do not, and unlike a raw logit they
  ignore evidence shared by all classes. Score-CAM scores the class probability.
* age: ``log(1 + expected age)``. Grad-CAM++ exponentiates its score, so the
  quantity it explains is ``1 + expected age`` itself. Score-CAM scores the
  expected age in years. Warm areas are those that push the estimate *up*.

Speed: the backbone (image -> ``out_relu``, (1, 4, 4, 1280)) runs once per face in
a compiled call and is cached; tf-keras-vis then differentiates only a small head
model (``out_relu`` activations -> logits of the three heads). That is exactly the
gradient tf-keras-vis would compute on the whole network (the activations do not
depend on the heads), at a fraction of the cost, and the heads share one backbone
pass. The logits come from layers that share the trained Dense weights, so the
model is never cloned or modified (``model_modifier=None``; the Analyze page keeps
using the same model object).

``python -m model.gradcam --bench`` times it against MTCNN detection.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.scorecam import Scorecam
from tf_keras_vis.utils.scores import InactiveScore

from model.architecture import LAST_CONV_LAYER
from model.labels import AGE_MIN, ETHNICITIES, GENDERS, HEAD_NAMES

# --- configuration ---------------------------------------------------------------------------

#: Saliency methods, in the order the app offers them. Grad-CAM and Grad-CAM++ cost
#: one shared backbone pass plus ~15 ms per head; Score-CAM runs SCORECAM_MAX_N extra
#: forward passes per head (~0.4 s per head on 2 busy CPU cores): slower, offered last.
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam")
DEFAULT_METHOD: str = "gradcam"
#: Opacity of the colour map in :func:`overlay`.
DEFAULT_ALPHA: float = 0.45
#: Class names per head; an empty tuple marks a regression head (no target class).
HEAD_CLASSES: dict[str, tuple[str, ...]] = {"age": (), "gender": GENDERS, "ethnicity": ETHNICITIES}
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
#: Share of the face crop hidden by :func:`faithfulness`.
OCCLUSION_FRACTION: float = 0.2


class FaceLike(Protocol):
    """What :func:`explain_face` needs of a face (``model.analyzer.FaceResult`` has it)."""

    index: int
    face_input: np.ndarray  # (S, S, 3) uint8 RGB: exactly what the model saw
    crop_affine: np.ndarray  # (2, 3) float64: photo (x, y) -> face_input pixel (x, y)


@dataclass(frozen=True)
class Explanation:
    """One head's heat map for one face, on the crop and on the photo, plus its overlay."""

    head: str  # one of labels.HEAD_NAMES
    target: int | None  # class index explained; None for age
    target_name: str  # class name, or AGE_TARGET_NAME
    method: str  # one of METHODS
    crop_heatmap: np.ndarray = field(repr=False)  # (S, S) float32 in [0, 1] on face_input
    photo_heatmap: np.ndarray = field(repr=False)  # (H, W) float32 in [0, 1], 0 outside the face region
    overlay: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB: photo with the colour map blended in


@dataclass(frozen=True)
class Faithfulness:
    """Occlusion check of one heat map: how much hiding pixels lowers the explained output.

    The explained output is the target class probability (gender, ethnicity) or the
    expected age in years (age). A faithful map has ``drop_hot > drop_random``.
    """

    head: str
    target: int | None
    fraction: float  # share of the face crop hidden
    base: float  # explained output of the untouched face
    drop_hot: float  # base minus the output with the hottest pixels hidden
    drop_random: float  # mean of base minus the output with random blobs hidden

    @property
    def margin(self) -> float:
        return self.drop_hot - self.drop_random


class LRUCache:
    """A small thread-safe least-recently-used cache (Streamlit serves sessions from threads)."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# --- scores: one function per head, dispatched by tables (tf ops on (B, C) tensors) -----------

_AGES = tf.constant(np.arange(AGE_MIN, AGE_MIN + 1000, dtype=np.float32))  # sliced to the bin count


def _expected_age(probabilities: tf.Tensor) -> tf.Tensor:
    """(B, K) age distribution -> (B,) expected age in years."""
    return tf.reduce_sum(probabilities * _AGES[: probabilities.shape[-1]], axis=-1)


def _log_expected_age(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """(B, K) age logits -> (B,) log(1 + expected age); ``targets`` unused."""
    return tf.math.log1p(_expected_age(tf.nn.softmax(logits, axis=-1)))


def _log_odds(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """(B, C) logits, (B,) class indices -> (B,) log-odds of each row's target class."""
    onehot = tf.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    target_logit = tf.reduce_sum(logits * onehot, axis=-1)
    others = tf.where(onehot > 0, tf.constant(-np.inf, logits.dtype), logits)
    return target_logit - tf.reduce_logsumexp(others, axis=-1)


def _age_years(probabilities: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return _expected_age(probabilities)


def _class_probability(probabilities: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(probabilities * tf.one_hot(targets, probabilities.shape[-1], dtype=probabilities.dtype), -1)


#: Scores of the gradient methods, applied to logits.
_GRADIENT_SCORES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "age": _log_expected_age,
    "gender": _log_odds,
    "ethnicity": _log_odds,
}
#: Scores of Score-CAM, applied to probabilities (tf-keras-vis softmaxes the logits first).
_PROBABILITY_SCORES: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "age": _age_years,
    "gender": _class_probability,
    "ethnicity": _class_probability,
}


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


# --- compute ---------------------------------------------------------------------------------


class GradCamExplainer:
    """Heat maps of a facelens model's three heads, with tf-keras-vis built once.

    ``heatmap`` / ``heatmaps`` cache results per (face pixels, head, target, method),
    so re-rendering (another opacity) or explaining another head of the same face
    is cheap. Arrays returned from the cache are read-only.
    """

    METHODS: tuple[str, ...] = METHODS

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
        #: (h, w) of the CAM grid: out_relu's spatial size, 4x4 for a 128 px input.
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
        self._maps = LRUCache(cache_size)
        self._activations = LRUCache(ACTIVATION_CACHE_SIZE)
        self._outputs = LRUCache(ACTIVATION_CACHE_SIZE)

    # -- public -------------------------------------------------------------------------------

    def heatmap(
        self, face_input: np.ndarray, head: str, target: int | str | None = None, method: str = DEFAULT_METHOD
    ) -> np.ndarray:
        """(S, S, 3) uint8 face input -> (S, S) float32 heat map in [0, 1] for one head."""
        return self.heatmaps(face_input, (head,), method, {head: target})[head]

    def heatmaps(
        self,
        face_input: np.ndarray,
        heads: Sequence[str] = HEAD_NAMES,
        method: str = DEFAULT_METHOD,
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
            cams = self._visualizers[method](self._scores(jobs, _PROBABILITY_SCORES), seed,
                                             max_N=self.scorecam_max_n, batch_size=64, **common)
        else:
            seed = tf.repeat(self._backbone_activations(face, key), len(jobs), axis=0)
            cams = self._visualizers[method](self._scores(jobs, _GRADIENT_SCORES), seed, **common)
        return np.asarray(cams, np.float32).reshape(len(jobs), *self.cam_shape)


def check_head(head: str) -> tuple[str, ...]:
    """The head's class names (empty for age); ValueError for an unknown head."""
    if head not in HEAD_CLASSES:
        raise ValueError(f"unknown head {head!r}; expected one of {HEAD_NAMES}")
    return HEAD_CLASSES[head]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return method


# --- geometry and rendering ------------------------------------------------------------------


def _region_window(
    crop_affine: np.ndarray, crop_shape: tuple[int, int], photo_shape: tuple[int, ...]
) -> tuple[int, int, int, int, np.ndarray] | None:
    """Photo window (x0, y0, x1, y1) holding the crop square, and a bool mask of the
    window's pixels whose centres map inside the crop; None when it misses the photo.

    The crop square spans [-0.5, S - 0.5) in pixel-centre coordinates (OpenCV's).
    """
    m = np.asarray(crop_affine, np.float64).reshape(2, 3)
    h, w = int(photo_shape[0]), int(photo_shape[1])
    ch, cw = crop_shape
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[-0.5, -0.5], [cw - 0.5, -0.5], [-0.5, ch - 0.5], [cw - 0.5, ch - 0.5]])
    box = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = max(int(np.floor(box[:, 0].min())), 0), max(int(np.floor(box[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(box[:, 0].max())) + 1, w), min(int(np.ceil(box[:, 1].max())) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = (u >= -0.5) & (u < cw - 0.5) & (v >= -0.5) & (v < ch - 0.5)
    return x0, y0, x1, y1, inside


def face_region_mask(crop_affine: np.ndarray, photo_shape: tuple[int, ...], crop_size: int = 128) -> np.ndarray:
    """(H, W) bool: photo pixels that ``crop_affine`` maps into the ``crop_size`` face crop."""
    mask = np.zeros(photo_shape[:2], bool)
    window = _region_window(crop_affine, (crop_size, crop_size), photo_shape)
    if window is not None:
        x0, y0, x1, y1, inside = window
        mask[y0:y1, x0:x1] = inside
    return mask


def warp_to_photo(crop_heatmap: np.ndarray, crop_affine: np.ndarray, photo_shape: tuple[int, ...]) -> np.ndarray:
    """(S, S) crop heat map -> (H, W) float32 in [0, 1] in photo pixels, 0 outside the face.

    ``crop_affine`` maps photo (x, y) to crop pixels, which is the inverse map
    ``warpAffine`` wants; only the face's window of the photo is warped.
    """
    heat = np.asarray(crop_heatmap, np.float32)
    if heat.ndim != 2:
        raise ValueError(f"crop_heatmap must be 2-D, got shape {heat.shape}")
    out = np.zeros(photo_shape[:2], np.float32)
    window = _region_window(crop_affine, heat.shape, photo_shape)
    if window is None:
        return out
    x0, y0, x1, y1, inside = window
    m = np.asarray(crop_affine, np.float64).reshape(2, 3).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # window pixel (i, j) is photo (x0 + i, y0 + j)
    warped = cv2.warpAffine(heat, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    out[y0:y1, x0:x1] = np.where(inside, np.clip(warped, 0.0, 1.0), 0.0)
    return out


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 RGB, JET colours (blue cold, red hot)."""
    heat8 = np.round(np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)  # OpenCV gives BGR


def overlay(
    photo: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA, region: np.ndarray | None = None
) -> np.ndarray:
    """Blend the colour-mapped ``heatmap`` onto ``photo`` at opacity ``alpha``.

    photo (H, W, 3) uint8 RGB, heatmap (H, W) in [0, 1], optional region (H, W) bool:
    only there is colour blended (the face), elsewhere the photo stays as it was.
    Returns a new (H, W, 3) uint8 RGB image.
    """
    photo = _check_photo(photo)
    heat = np.asarray(heatmap)
    if heat.shape != photo.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match photo {photo.shape[:2]}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if region is None:
        return cv2.addWeighted(photo, 1.0 - float(alpha), colorize(heat), float(alpha), 0.0)
    out = photo.copy()
    ys, xs = np.nonzero(region)
    if len(ys):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        window = photo[y0:y1, x0:x1]
        blended = cv2.addWeighted(window, 1.0 - float(alpha), colorize(heat[y0:y1, x0:x1]), float(alpha), 0.0)
        out[y0:y1, x0:x1] = np.where(region[y0:y1, x0:x1, None], blended, window)
    return out


def _check_photo(photo: np.ndarray) -> np.ndarray:
    arr = np.asarray(photo)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"photo must be an (H, W, 3) uint8 RGB array, got {arr.shape} {arr.dtype}")
    return arr


# --- explanations of a face in a photo -------------------------------------------------------


def _face_target(face: FaceLike, head: str) -> int | str | None:
    """Default target: the class the analyzer reported (flip-averaged), if the face has one."""
    predicted = getattr(face, head, None)
    return predicted if isinstance(predicted, str) and predicted in HEAD_CLASSES.get(head, ()) else None


def explain_heads(
    explainer: GradCamExplainer,
    photo: np.ndarray,
    face: FaceLike,
    heads: Iterable[str] = HEAD_NAMES,
    targets: Mapping[str, int | str | None] | None = None,
    method: str = DEFAULT_METHOD,
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, Explanation]:
    """Explanations of several heads of one face (one batched tf-keras-vis call).

    photo: (H, W, 3) uint8 RGB, the photo ``face`` was found in. A missing or None
    target means the face's predicted class (``face.gender`` / ``face.ethnicity``
    when present, else the model's argmax).
    """
    photo = _check_photo(photo)
    heads = tuple(heads)
    wanted = {head: (targets or {}).get(head) for head in heads}
    wanted = {head: _face_target(face, head) if t is None else t for head, t in wanted.items()}
    maps = explainer.heatmaps(face.face_input, heads, method, wanted)
    region = face_region_mask(face.crop_affine, photo.shape, explainer.input_size)
    out = {}
    for head in heads:
        index, name = explainer.resolve_target(head, wanted[head], face.face_input)
        photo_heatmap = warp_to_photo(maps[head], face.crop_affine, photo.shape)
        out[head] = Explanation(
            head=head, target=index, target_name=name, method=method, crop_heatmap=maps[head],
            photo_heatmap=photo_heatmap, overlay=overlay(photo, photo_heatmap, alpha, region),
        )
    return out


def explain_face(
    explainer: GradCamExplainer,
    photo: np.ndarray,
    face: FaceLike,
    head: str,
    target: int | str | None = None,
    method: str = DEFAULT_METHOD,
    alpha: float = DEFAULT_ALPHA,
) -> Explanation:
    """One head's explanation of one face (what ``FaceAnalyzer.explain`` returns)."""
    check_head(head)
    return explain_heads(explainer, photo, face, (head,), {head: target}, method, alpha)[head]


def explanation_paths(directory: str | Path, stem: str, face_index: int, head: str) -> tuple[Path, Path]:
    """``DIR/S_face{i}_{H}.png`` (overlay) and ``.npy`` (photo heat map)."""
    base = Path(directory) / f"{stem}_face{face_index}_{head}"
    return base.with_suffix(".png"), base.with_suffix(".npy")


def save_explanation(expl: Explanation, directory: str | Path, stem: str, face_index: int) -> tuple[Path, Path]:
    """Write the overlay PNG and the (H, W) float32 photo heat map; returns both paths."""
    png, npy = explanation_paths(directory, stem, face_index, expl.head)
    png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png), cv2.cvtColor(expl.overlay, cv2.COLOR_RGB2BGR)):  # OpenCV writes BGR
        raise OSError(f"could not write {png}")
    np.save(npy, np.asarray(expl.photo_heatmap, np.float32))
    return png, npy


# --- faithfulness ----------------------------------------------------------------------------


def box_region(box: tuple[float, float, float, float], crop_affine: np.ndarray, size: int = 128) -> np.ndarray:
    """(size, size) bool: the face crop's pixels inside a photo box (x, y, w, h).

    The aligned crop shows more than the detected face (UTKFace framing keeps hair
    and some background); this picks the face box's own pixels.
    """
    x, y, w, h = (float(v) for v in box)
    corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    m = np.asarray(crop_affine, np.float64).reshape(2, 3)
    quad = corners @ m[:, :2].T + m[:, 2]
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def occlusion_masks(
    heatmap: np.ndarray,
    fraction: float = OCCLUSION_FRACTION,
    rng: np.random.Generator | None = None,
    n_random: int = 8,
    grid: int = 4,
    region: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The hottest ``fraction`` of the ``region``'s pixels, and ``n_random`` random masks of the same size.

    Random masks are the top pixels of a smooth random field on the CAM's own
    ``grid`` (blobs shaped like a heat map's), not scattered single pixels, whose
    salt-and-pepper edges would hurt a CNN for reasons of their own.
    heatmap (S, S) float; region (S, S) bool, default everything.
    Returns hot (S, S) bool and random (n_random, S, S) bool.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = rng if rng is not None else np.random.default_rng(0)
    heat = np.asarray(heatmap, np.float64)
    eligible = np.ones(heat.shape, bool) if region is None else np.asarray(region, bool)
    if eligible.shape != heat.shape or not eligible.any():
        raise ValueError(f"region must be a non-empty bool mask of shape {heat.shape}")
    size, k = heat.size, int(round(fraction * int(eligible.sum())))

    def top(values: np.ndarray) -> np.ndarray:
        ranked = np.where(eligible, values, -np.inf).ravel()
        order = np.lexsort((rng.random(size), -ranked))  # highest first, ties broken at random
        mask = np.zeros(size, bool)
        mask[order[:k]] = True
        return mask.reshape(heat.shape)

    fields = [cv2.resize(rng.random((grid, grid)).astype(np.float32), heat.shape[::-1],
                         interpolation=cv2.INTER_CUBIC) for _ in range(n_random)]
    return top(heat), np.stack([top(f) for f in fields]) if fields else np.zeros((0, *heat.shape), bool)


def occlude(face_input: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of the (S, S, 3) uint8 face with ``mask`` pixels set to the face's mean colour."""
    out = np.array(face_input, np.uint8, copy=True)
    out[mask] = np.round(face_input.reshape(-1, 3).mean(0)).astype(np.uint8)
    return out


def faithfulness(
    explainer: GradCamExplainer,
    face_input: np.ndarray,
    heatmap: np.ndarray,
    head: str,
    target: int | str | None = None,
    fraction: float = OCCLUSION_FRACTION,
    rng: np.random.Generator | None = None,
    n_random: int = 8,
    region: np.ndarray | None = None,
) -> Faithfulness:
    """How much hiding the hottest ``fraction`` of the face (``region``, e.g.
    :func:`box_region`; default the whole crop) lowers the explained output, against
    hiding random blobs of the same area. One batched forward pass."""
    face = np.asarray(face_input, np.uint8)
    index, _ = explainer.resolve_target(head, target, face)
    hot, random_masks = occlusion_masks(heatmap, fraction, rng, n_random, explainer.cam_shape[0], region)
    batch = np.stack([face, occlude(face, hot), *(occlude(face, m) for m in random_masks)])
    values = explainer.explained_output(batch, head, index).astype(np.float64)
    drops = values[0] - values[1:]
    return Faithfulness(head=head, target=index, fraction=fraction, base=float(values[0]),
                        drop_hot=float(drops[0]), drop_random=float(drops[1:].mean()) if n_random else 0.0)


@dataclass(frozen=True)
class FaithfulnessSummary:
    """Occlusion check of one head and method over several faces."""

    head: str
    method: str
    faces: int
    drop_hot: float  # mean over faces
    drop_random: float  # mean over faces
    wins: int  # faces where hiding the hot pixels hurt more than hiding random blobs
    t_stat: float  # paired t statistic of (hot - random) over faces; nan below 2 faces

    @property
    def faithful(self) -> bool:
        return self.drop_hot > self.drop_random


def summarize_faithfulness(
    explainer: GradCamExplainer,
    face_inputs: Sequence[np.ndarray],
    regions: Sequence[np.ndarray | None] | None = None,
    targets: Sequence[Mapping[str, int | str | None]] | None = None,
    methods: Sequence[str] = (DEFAULT_METHOD,),
    heads: Sequence[str] = HEAD_NAMES,
    fraction: float = OCCLUSION_FRACTION,
    n_random: int = 16,
    seed: int = 0,
) -> list[FaithfulnessSummary]:
    """:func:`faithfulness` of every head and method over many faces, averaged.

    face_inputs: (S, S, 3) uint8 crops; regions: per face, the pixels eligible for
    hiding (None: the whole crop); targets: per face, {head: class} (default predicted).
    """
    out = []
    for method in methods:
        for head in heads:
            hot, rand = [], []
            for i, face in enumerate(face_inputs):
                target = (targets[i] if targets else {}).get(head)
                heat = explainer.heatmap(face, head, target, method)
                result = faithfulness(explainer, face, heat, head, target, fraction, np.random.default_rng(seed),
                                      n_random, regions[i] if regions else None)
                hot.append(result.drop_hot)
                rand.append(result.drop_random)
            diff = np.array(hot) - np.array(rand)
            t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 and diff.std() > 0 else np.nan
            out.append(FaithfulnessSummary(head, method, len(diff), float(np.mean(hot)), float(np.mean(rand)),
                                           int((diff > 0).sum()), float(t)))
    return out


def _shifted(photo: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(photo)
    h, w = photo.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = photo[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def astronaut_variants() -> dict[str, np.ndarray]:
    """skimage's astronaut (shipped with the package, 512x512 RGB uint8) and flipped,
    shifted, brighter and darker copies: a few real faces that need no download."""
    from skimage import data

    photo = data.astronaut()
    return {
        "original": photo,
        "flipped": np.ascontiguousarray(photo[:, ::-1]),
        "shifted": _shifted(photo, 40, 25),
        "brighter": np.clip(photo * 1.3 + 10, 0, 255).astype(np.uint8),
        "darker": (photo * 0.7).astype(np.uint8),
    }


def faithfulness_summary(
    analyzer: Any,
    photos: Mapping[str, np.ndarray],
    explainer: GradCamExplainer | None = None,
    methods: Sequence[str] = (DEFAULT_METHOD,),
    **kwargs: Any,
) -> list[FaithfulnessSummary]:
    """Occlusion check of the first face of each photo, hiding pixels of its detected box.

    ``analyzer``: a ``model.analyzer.FaceAnalyzer`` (anything whose ``analyze(photo)``
    returns faces with ``box``, ``face_input``, ``crop_affine`` and predicted classes).
    """
    explainer = explainer if explainer is not None else GradCamExplainer(analyzer.model)
    faces = []
    for name, photo in photos.items():
        found = analyzer.analyze(photo)
        if not found:
            raise ValueError(f"no face found in photo {name!r}")
        faces.append(found[0])
    return summarize_faithfulness(
        explainer,
        [face.face_input for face in faces],
        regions=[box_region(face.box, face.crop_affine, explainer.input_size) for face in faces],
        targets=[{head: _face_target(face, head) for head in HEAD_NAMES} for face in faces],
        methods=methods,
        **kwargs,
    )


def utkface_faces(directory: str | Path, n: int, seed: int = 0, size: int = 128) -> list[np.ndarray]:
    """``n`` UTKFace aligned crops, drawn at random (fixed seed), prepared as face inputs.

    The chips are already framed like the training data: each is a whole face crop.
    """
    from model.preprocess import prepare_face

    files = sorted(Path(directory).glob("*.jpg"))
    if len(files) < n:
        raise ValueError(f"need {n} UTKFace images in {directory}, found {len(files)}")
    picked = np.random.default_rng(seed).choice(len(files), n, replace=False)
    faces = []
    for i in picked:
        bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if bgr is not None:
            faces.append(prepare_face(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size))  # OpenCV reads BGR
    return faces


# --- benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """Seconds (median over repeats, after warm-up) on one 640x480 photo with one face."""

    model: str
    detect_s: float  # MTCNN().detect_faces on the photo
    per_head_calls_s: dict[str, float]  # method -> explain_face for each head in turn (cold cache)
    batched_s: dict[str, float]  # method -> explain_heads, all three heads in one call (cold cache)


def bench_photo() -> np.ndarray:
    """skimage's astronaut (512x512) shrunk to 480 px high and padded to 640x480 RGB uint8."""
    from skimage import data

    face = cv2.resize(data.astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    photo = np.zeros((480, 640, 3), np.uint8)
    photo[:, 80:560] = face
    return photo


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (tracing, first-call allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark(model_path: str | Path | None = None, repeats: int = 5,
              methods: Sequence[str] = METHODS) -> BenchResult:
    """Time MTCNN detection and explaining all three heads of its face, per method."""
    from mtcnn import MTCNN

    from model import settings
    from model.align import align_face
    from model.architecture import build_model, load_model

    path = Path(model_path) if model_path else settings.model_path()
    if path.is_file():
        model, name = load_model(path), str(path)
    else:
        model, name = build_model(settings.INPUT_SIZE), f"untrained (no file at {path})"
    photo = bench_photo()
    detector = MTCNN()
    detect_s = _median_time(lambda: detector.detect_faces(photo), repeats)
    detections = detector.detect_faces(photo)
    if not detections:
        raise RuntimeError("MTCNN found no face in the benchmark photo")
    aligned = align_face(photo, {k: tuple(map(float, v)) for k, v in detections[0]["keypoints"].items()})
    face = _BenchFace(0, aligned.face_input, aligned.crop_affine)
    explainer = GradCamExplainer(model)

    def per_head(method: str) -> None:
        explainer.clear_cache()
        for head in HEAD_NAMES:
            explain_face(explainer, photo, face, head, method=method)

    def batched(method: str) -> None:
        explainer.clear_cache()
        explain_heads(explainer, photo, face, HEAD_NAMES, method=method)

    per_head_s = {m: _median_time(lambda m=m: per_head(m), repeats) for m in methods}
    batched_s = {m: _median_time(lambda m=m: batched(m), repeats) for m in methods}
    return BenchResult(name, detect_s, per_head_s, batched_s)


@dataclass(frozen=True)
class _BenchFace:
    index: int
    face_input: np.ndarray
    crop_affine: np.ndarray


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.gradcam", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="time Grad-CAM against MTCNN detection")
    parser.add_argument("--faithfulness", action="store_true",
                        help="occlusion check on the astronaut and variants (needs a trained model)")
    parser.add_argument("--model", default=None, help="model file (default: FACELENS_MODEL or the shipped one)")
    parser.add_argument("--utkface", type=int, default=100,
                        help="--faithfulness also on this many UTKFace crops when ../shared has them")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    if not (args.bench or args.faithfulness):
        parser.print_help()
        return 2
    if args.faithfulness:
        _print_faithfulness(args.model, args.methods, args.utkface)
    if args.bench:
        _print_bench(args.model, args.repeats, args.methods)
    return 0


def _print_faithfulness(model_path: str | None, methods: Sequence[str], n_utkface: int) -> None:
    from model import settings
    from model.analyzer import FaceAnalyzer

    path = Path(model_path) if model_path else settings.model_path()
    analyzer = FaceAnalyzer(path)
    explainer = GradCamExplainer(analyzer.model)
    print(f"model: {path}")
    print(f"hide {OCCLUSION_FRACTION:.0%} of the face (mean colour): hottest pixels vs random blobs (16 draws); "
          "drop of the target probability, or of the expected age in years")
    sets = [("astronaut x5 (face box)", faithfulness_summary(analyzer, astronaut_variants(), explainer, methods))]
    folder = settings.utkface_dir()
    if folder is not None and n_utkface > 0:
        faces = utkface_faces(folder, n_utkface)
        sets.append((f"UTKFace x{len(faces)} (whole crop)",
                     summarize_faithfulness(explainer, faces, methods=methods, n_random=8)))
    for label, rows in sets:
        for row in rows:
            print(f"{label:26s} {row.method:10s} {row.head:10s} hot {row.drop_hot:+8.3f}  random "
                  f"{row.drop_random:+8.3f}  hot wins {row.wins:3d}/{row.faces:<3d} t={row.t_stat:+5.1f}  "
                  f"{'faithful' if row.faithful else 'NOT faithful'}")


def _print_bench(model_path: str | None, repeats: int, methods: Sequence[str]) -> None:
    result = benchmark(model_path, repeats, methods)
    print(f"model: {result.model}")
    print("photo: skimage astronaut resized to 480x480, padded to 640x480; one face; "
          f"median of {repeats} runs after warm-up")
    print(f"MTCNN().detect_faces: {result.detect_s * 1000:7.1f} ms  (budget for three heads: "
          f"{2 * result.detect_s * 1000:.1f} ms)")
    for method in methods:
        for label, seconds in (("3 x explain_face", result.per_head_calls_s[method]),
                               ("explain_heads (batched)", result.batched_s[method])):
            print(f"{method:10s} {label:24s}: {seconds * 1000:7.1f} ms  = {seconds / result.detect_s:4.2f} x detect")


if __name__ == "__main__":
    sys.exit(main())
