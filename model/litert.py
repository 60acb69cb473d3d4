"""The network compiled for LiteRT (TensorFlow Lite with XNNPACK): the fast engine.

Why: on 2 CPU cores a lone face with its mirror costs ~25 ms through a Keras
``tf.function`` (mostly per-call graph overhead), and ~4-8 ms through LiteRT's XNNPACK
kernels, with the same outputs to ~1e-5. Batches of 64 run ~2.5x faster too.

The Keras model stays the source of truth (training, Grad-CAM and the model file
are Keras); the flatbuffer is derived from its weights. Converting takes 3-8 s,
so the result is kept in ``FACELENS_CACHE/litert/<hash of architecture and
weights>.tflite``: each model converts once per machine, a retrained model gets its
own entry, and only the :data:`KEEP_CACHED` newest entries are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Flatbuffers kept in the cache folder (each ~13 MB for the shipped network).
KEEP_CACHED = 4


def _interpreter_class():
    """LiteRT's interpreter (``ai-edge-litert``); TensorFlow's own as the fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is in requirements.txt
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def model_key(net) -> str:
    """A hash of the network's layers, outputs, weights and TensorFlow version.

    Weights, not the model file: the engine serves injected in-memory models too, and
    a model saved again with the same weights needs no new conversion. Names are left
    out: Keras renames layers and variables of a second copy loaded in one process.
    """
    import json

    import tensorflow as tf

    def unnamed(config):
        return {k: v for k, v in config.items() if k != "name"}

    layers = [(type(layer).__name__, unnamed(layer.get_config())) for layer in net.layers]
    outputs = [tuple(out.shape) for out in net.outputs]
    digest = hashlib.sha256()
    digest.update(json.dumps([tf.__version__, layers, outputs], sort_keys=True, default=str).encode())
    for weight in net.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(str((value.shape, value.dtype.str)).encode())
        digest.update(value.data)
    return digest.hexdigest()[:32]


def convert(net) -> bytes:
    """The Keras model as a LiteRT flatbuffer (float32, batch size free)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    # The converter exports a SavedModel first and prints its signature to stdout.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def cached_flatbuffer(net, cache_dir: Path | None) -> bytes:
    """:func:`convert`, reusing ``cache_dir/<model_key>.tflite`` (None: no cache)."""
    if cache_dir is None:
        return convert(net)
    path = cache_dir / f"{model_key(net)}.tflite"
    try:
        content = path.read_bytes()
    except OSError:
        content = None
    if content is not None:
        with contextlib.suppress(OSError):  # a read-only cache still serves
            os.utime(path)  # most recently used: the last to be pruned
        return content
    content = convert(net)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".part", delete=False) as tmp:
            tmp.write(content)
        os.replace(tmp.name, path)  # atomic: a concurrent reader never sees half a file
        _prune(cache_dir)
    except OSError as exc:  # a read-only home still gets the fast engine, converted each start
        log.warning("could not cache the LiteRT model in %s (%s)", cache_dir, exc)
    return content


def _prune(cache_dir: Path) -> None:
    entries = sorted(cache_dir.glob("*.tflite"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP_CACHED:]:
        old.unlink(missing_ok=True)


class LiteRTRunner:
    """Run a flatbuffer on float32 batches of any size; outputs in the Keras model's order.

    One interpreter, guarded by a lock: an interpreter is not thread-safe, and the app
    shares one predictor between sessions and the live video thread.
    """

    def __init__(self, content: bytes, num_threads: int | None = None):
        threads = num_threads or len(os.sched_getaffinity(0))
        with warnings.catch_warnings():  # TensorFlow's fallback interpreter warns it is deprecated
            warnings.simplefilter("ignore")
            self._interpreter = _interpreter_class()(model_content=content, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"expected one signature in the LiteRT model, found {sorted(signatures)}")
        (key, spec), = signatures.items()
        self._runner = self._interpreter.get_signature_runner(key)
        (self._input,) = spec["inputs"]
        # Keras exports a list of outputs as output_0, output_1, ... in the model's order.
        self._outputs = sorted(spec["outputs"], key=lambda name: int(name.rsplit("_", 1)[-1]))
        self._lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            out = self._runner(**{self._input: images})
        return [np.asarray(out[name]) for name in self._outputs]
