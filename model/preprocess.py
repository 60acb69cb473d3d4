"""The single preprocessing path from a face crop to the network's input.

Training caches, evaluation and the app all call :func:`prepare_face`, so a face
prepared for training and a face prepared in the app are the same pixels. Scaling
to [-1, 1] (what MobileNetV2's ImageNet weights expect) happens inside the model,
so callers hand it plain uint8 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from model.settings import INPUT_SIZE


def prepare_face(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Resize an RGB face crop (HxWx3 or HxW grayscale, uint8) to ``size`` x ``size`` x 3 uint8.

    The crop must already be framed like a UTKFace aligned crop (the face pipeline
    does that for photos). INTER_AREA when shrinking avoids aliasing; bilinear when
    enlarging small inputs such as the 48x48 Kaggle CSV faces.
    """
    arr = np.asarray(crop)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 RGB crop, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(arr)
    interp = cv2.INTER_AREA if min(h, w) >= size else cv2.INTER_LINEAR
    return cv2.resize(arr, (size, size), interpolation=interp)


def prepare_batch(crops: list[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Stack prepared crops into an Nx size x size x3 uint8 batch (N may be 0)."""
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([prepare_face(c, size) for c in crops])
