"""Losses and metrics for partial labels: a head whose label is missing contributes
nothing, and an age *range* trains the age distribution to put its mass in the range.

Targets carry their per-sample weight and their kind in one tensor, so Keras needs
no per-output sample_weight plumbing:

* gender / ethnicity: ``w * q`` (a smoothed one-hot q); all zeros when unlabelled.
* age_dist: ``+w * gaussian`` for an exact age (cross-entropy with the label
  distribution), ``-w * mask / len`` for a range (``-log P(age in range)``), zeros
  when there is no age.
* age: the exact age, or -1 when there is none (masked L1).

With ``--consistency`` the batch holds each face twice, differently augmented, in
adjacent rows; :class:`PairConsistentLoss` adds the symmetric KL divergence between
the two views' predictions, so the answer stops moving with framing and light.
"""

from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-7


def weighted_soft_crossentropy(y_true, y_pred):
    """Cross-entropy for targets pre-multiplied by a per-sample weight w (0 when unlabelled).

    The weight is the target's sum; the loss is w * CE(target / w, prediction).
    Passing unnormalised targets straight to Keras' cross-entropy is wrong under
    TensorFlow: its fused softmax kernel back-propagates ``softmax - target``,
    which is the gradient only for targets that sum to 1, and training diverges
    (measured: a frozen-feature head's loss went 1.5 -> 44,000 in 8 epochs).
    """
    from keras import losses

    weight = ops.maximum(ops.sum(y_true, axis=-1), 1e-8)
    return weight * losses.categorical_crossentropy(y_true / weight[:, None], y_pred)


def age_distribution_loss(y_true, y_pred):
    """Exact ages: w * CE(gaussian, p). Ranges: -w * log(sum of p over the range). None: 0."""
    total = ops.sum(y_true, axis=-1)
    log_p = ops.log(ops.clip(y_pred, _EPS, 1.0))
    exact_w = ops.maximum(total, 0.0)
    soft = ops.where(total[:, None] > 0, y_true / ops.maximum(total, 1e-8)[:, None], 0.0)
    exact = -ops.sum(soft * log_p, axis=-1) * exact_w
    range_w = ops.maximum(-total, 0.0)
    in_range = ops.cast(y_true < 0, y_pred.dtype)
    mass = ops.sum(in_range * y_pred, axis=-1)
    ranged = -ops.log(ops.clip(mass, _EPS, 1.0)) * range_w
    return exact + ranged


def masked_mae(y_true, y_pred):
    """L1 on exact ages only (targets < 0 mean 'no exact age')."""
    y_true = ops.reshape(y_true, (-1,))
    y_pred = ops.reshape(y_pred, (-1,))
    valid = ops.cast(y_true >= 0, y_pred.dtype)
    return valid * ops.abs(y_true - y_pred)


class MaskedAccuracy(keras.metrics.Metric):
    """Top-class accuracy over labelled samples only (weighted one-hot targets; zero rows skipped)."""

    def __init__(self, name: str = "acc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_weight(name="correct", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        valid = ops.cast(ops.sum(y_true, axis=-1) > 0, "float32")
        hit = ops.cast(ops.argmax(y_true, axis=-1) == ops.argmax(y_pred, axis=-1), "float32")
        self.correct.assign_add(ops.sum(hit * valid))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)


class MaskedMAE(keras.metrics.Metric):
    """Mean absolute age error over samples with an exact age."""

    def __init__(self, name: str = "mae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "float32")
        valid = ops.cast(y_true >= 0, "float32")
        self.total.assign_add(ops.sum(masked_mae(y_true, ops.cast(ops.reshape(y_pred, (-1,)), "float32"))))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


def pair_divergence(y_pred):
    """Symmetric KL (Jeffreys) divergence between rows 2i and 2i+1, given to both rows.

    Rows come in pairs of two views of one face; the per-sample value is the pair's
    divergence, so the batch mean is the mean over pairs. Unlabelled faces count too:
    agreeing with oneself needs no label.
    """
    p = ops.clip(y_pred, _EPS, 1.0)
    pairs = ops.reshape(p, (-1, 2, ops.shape(p)[-1]))
    a, b = pairs[:, 0], pairs[:, 1]
    divergence = ops.sum((a - b) * (ops.log(a) - ops.log(b)), axis=-1)
    return ops.repeat(divergence, 2, axis=0)


_BASE_LOSSES = {"weighted_soft_crossentropy": weighted_soft_crossentropy,
                "age_distribution_loss": age_distribution_loss}


@keras.saving.register_keras_serializable(package="facelens")
class PairConsistentLoss(keras.losses.Loss):
    """A head's own loss plus ``weight`` times the disagreement of the two views of each face."""

    def __init__(self, base: str, weight: float = 1.0, name: str | None = None,
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name or f"{base}_paired", reduction=reduction, dtype=dtype)
        if base not in _BASE_LOSSES:
            raise ValueError(f"unknown base loss {base!r}; one of {sorted(_BASE_LOSSES)}")
        self.base = base
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        return _BASE_LOSSES[self.base](y_true, y_pred) + self.weight * pair_divergence(y_pred)

    def get_config(self):
        return {"base": self.base, "weight": self.weight, "name": self.name, "reduction": self.reduction}


#: What ``keras.saving.load_model`` needs to reload a training checkpoint.
CUSTOM_OBJECTS = {
    "weighted_soft_crossentropy": weighted_soft_crossentropy,
    "age_distribution_loss": age_distribution_loss,
    "masked_mae": masked_mae,
    "MaskedAccuracy": MaskedAccuracy,
    "MaskedMAE": MaskedMAE,
    "PairConsistentLoss": PairConsistentLoss,
}
