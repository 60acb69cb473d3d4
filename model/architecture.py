"""The network: one flat MobileNetV2 with three named heads.

Built flat (backbone created with ``input_tensor=``), so every backbone layer is a
layer of this model and Grad-CAM can reach the last conv layer (``out_relu``);
nested sub-models break tf-keras-vis under Keras 3.

Outputs, in this order (names are the layer names):
  age        (N, 1)   expected age in years = sum_k k * p(k)
  age_dist   (N, 117) softmax over ages 0..116 (DLDL-style label distribution)
  gender     (N, 2)   softmax over labels.GENDERS
  ethnicity  (N, 5)   softmax over labels.ETHNICITIES
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from model.labels import AGE_MIN, ETHNICITIES, GENDERS, NUM_AGE_BINS
from model.settings import INPUT_SIZE

OUTPUT_NAMES: tuple[str, ...] = ("age", "age_dist", "gender", "ethnicity")
LAST_CONV_LAYER: str = "out_relu"
#: First backbone layer that fine-tuning unfreezes (blocks 3..16 and Conv_1):
#: the lowest blocks hold generic edges/textures and cost much of the backward pass.
DEFAULT_FINE_TUNE_FROM: str = "block_3_expand"


def build_model(
    input_size: int = INPUT_SIZE,
    imagenet_weights: str | Path | None = None,
    dropout: float = 0.25,
    head_units: int = 256,
) -> keras.Model:
    """Build the three-head model; load ImageNet backbone weights from a local file.

    Input: (N, input_size, input_size, 3) float RGB in [0, 255] (uint8 values);
    the Rescaling layer maps it to [-1, 1] as MobileNetV2 expects.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    backbone = keras.applications.MobileNetV2(
        input_tensor=scaled, include_top=False, weights=None, alpha=1.0
    )
    if imagenet_weights is not None:
        backbone.load_weights(str(imagenet_weights))
    features = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    features = keras.layers.Dropout(dropout, name="pool_dropout")(features)

    def head(name: str, units: int) -> keras.KerasTensor:
        hidden = keras.layers.Dense(head_units, activation="relu", name=f"{name}_hidden")(features)
        hidden = keras.layers.Dropout(dropout, name=f"{name}_dropout")(hidden)
        return keras.layers.Dense(units, activation="softmax", name=name)(hidden)

    age_dist = head("age_dist", NUM_AGE_BINS)
    # Expected age as a frozen Dense layer whose kernel is the bin ages: a plain
    # Keras layer, so the saved model loads without custom objects.
    bin_ages = np.arange(AGE_MIN, AGE_MIN + NUM_AGE_BINS, dtype="float32")[:, None]
    age = keras.layers.Dense(
        1,
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(bin_ages),
        name="age",
    )(age_dist)
    gender = head("gender", len(GENDERS))
    ethnicity = head("ethnicity", len(ETHNICITIES))
    model = keras.Model(inputs, [age, age_dist, gender, ethnicity], name="facelens_mobilenetv2")
    freeze_backbone(model)
    return model


def _is_backbone_layer(layer: keras.layers.Layer) -> bool:
    head_prefixes = ("age", "gender", "ethnicity", "pool")
    return not layer.name.startswith(head_prefixes) and layer.name not in ("image", "scale")


def freeze_backbone(model: keras.Model) -> None:
    """Freeze every backbone layer (phase 1: train the heads only)."""
    for layer in model.layers:
        if _is_backbone_layer(layer):
            layer.trainable = False


def unfreeze_backbone(
    model: keras.Model, from_layer: str = DEFAULT_FINE_TUNE_FROM, train_batchnorm: bool = True
) -> int:
    """Unfreeze backbone layers from ``from_layer`` on (phase 2).

    BatchNorm in the unfrozen part trains too by default (with a faster moving
    average), so its statistics move from ImageNet to faces; ``train_batchnorm=False``
    keeps the ImageNet statistics (the usual choice for very small datasets).

    Returns the number of trainable backbone layers.
    """
    names = [layer.name for layer in model.layers]
    if from_layer not in names:
        raise ValueError(f"no layer named {from_layer!r} in the model")
    start = names.index(from_layer)
    count = 0
    for index, layer in enumerate(model.layers):
        if not _is_backbone_layer(layer):
            continue
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        trainable = index >= start and (train_batchnorm or not is_bn)
        layer.trainable = trainable
        if is_bn and trainable:
            layer.momentum = 0.99  # adapt the ImageNet statistics to faces within an epoch
        count += int(trainable and bool(layer.weights))
    return count


def load_model(path: str | Path) -> keras.Model:
    """Load a saved facelens model for inference (no optimizer, no compile)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return keras.saving.load_model(path, compile=False)
