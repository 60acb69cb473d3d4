"""Batched training augmentation in TensorFlow ops (runs inside tf.data).

One projective transform per image combines flip, rotation, zoom and shift, so a
batch costs a single resampling op; then brightness, contrast and occasional
grayscale. Input and output: float32 (N, S, S, 3) in [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 12.0
    zoom_range: tuple[float, float] = (0.9, 1.12)
    max_shift: float = 0.06  # fraction of the side
    brightness: float = 0.15  # fraction of 255
    contrast: tuple[float, float] = (0.75, 1.25)
    grayscale_probability: float = 0.05


def _transforms(batch: int, size: int, cfg: AugmentConfig) -> tf.Tensor:
    """(N, 8) projective transforms mapping output pixels to input pixels."""
    angle = tf.random.uniform([batch], -1.0, 1.0) * (cfg.max_rotation_deg * math.pi / 180.0)
    zoom = tf.random.uniform([batch], cfg.zoom_range[0], cfg.zoom_range[1])
    shift = tf.random.uniform([batch, 2], -cfg.max_shift, cfg.max_shift) * size
    flip = tf.cast(tf.random.uniform([batch]) < 0.5, tf.float32) * -2.0 + 1.0  # -1 flips
    center = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = A @ (output - center) + center - shift, with an optional mirror in x.
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    a2 = center - a0 * center - a1 * center - shift[:, 0]
    b2 = center - b0 * center - b1 * center - shift[:, 1]
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, cfg: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    images = tf.cast(images, tf.float32)
    batch = tf.shape(images)[0]
    size = images.shape[1]
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=_transforms(batch, size, cfg),
        output_shape=tf.constant([size, size]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    contrast = tf.random.uniform([batch, 1, 1, 1], cfg.contrast[0], cfg.contrast[1])
    brightness = tf.random.uniform([batch, 1, 1, 1], -cfg.brightness, cfg.brightness) * 255.0
    images = (images - mean) * contrast + mean + brightness
    gray = tf.reduce_mean(images, axis=3, keepdims=True) * tf.ones_like(images)
    use_gray = tf.random.uniform([batch, 1, 1, 1]) < cfg.grayscale_probability
    images = tf.where(use_gray, gray, images)
    return tf.clip_by_value(images, 0.0, 255.0)
