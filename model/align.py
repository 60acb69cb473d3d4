"""Alignment: map a detected face onto the framing of a UTKFace aligned crop.

The model only ever saw UTKFace "aligned & cropped" faces (200x200). A photo's face
is brought into that framing by a similarity transform (rotation + uniform scale +
shift) that sends the five MTCNN landmarks onto where MTCNN finds them, on average,
in real UTKFace crops (:data:`TEMPLATE`). A tighter or looser crop than training
costs years of age error, so the template is measured, not guessed.

Everything here is pure numpy/OpenCV on arrays, so it is unit-tested on tiny
synthetic images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from model.preprocess import prepare_face
from model.settings import INPUT_SIZE, UTKFACE_CROP_SIZE

#: Landmark names in MTCNN's order ("left_eye" is the eye on the image's left).
LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Where MTCNN puts the five landmarks in a 200x200 UTKFace aligned crop: the mean
#: over real crops, pixel (x, y), measured with
#: ``python -m training.measure_template --n 1500`` (MTCNN 1.0 through FaceDetector,
#: confidence >= 0.90) on 1500 random train-split crops of ../shared/data/utkface/UTKFace:
#: a face was found in 1471; per-point std 3-7 px. Inter-eye distance 77.1 px (0.386
#: of the crop), eye centre to mouth centre 79.7 px (0.398): UTKFace crops are tight.
TEMPLATE: np.ndarray = np.array(
    [
        [59.6, 57.8],  # left_eye  (std 3.6, 2.8)
        [136.6, 58.0],  # right_eye  (std 3.4, 2.9)
        [98.0, 103.2],  # nose  (std 5.5, 5.0)
        [63.0, 137.5],  # mouth_left  (std 6.6, 5.0)
        [132.7, 137.6],  # mouth_right  (std 7.0, 5.0)
    ],
    dtype=np.float64,
)

#: Per-landmark weights for the least-squares fit. Scored by the same script (how
#: close each crop's own fit comes to the identity; mean |log scale|, centre shift
#: px, |angle| deg): all five 0.029/2.23/1.23, no nose 0.027/3.85/1.33, eyes x2
#: 0.025/2.48/1.10. Eyes x2 gives the steadiest scale (what age error is most
#: sensitive to) and rotation, so the eyes weigh double.
LANDMARK_WEIGHTS: np.ndarray = np.array([2.0, 2.0, 1.0, 1.0, 1.0])

#: Extra scale about the crop centre: 1.0 reproduces the template exactly; > 1
#: zooms out (looser crop). Checked 2026-11-23 with ``python -m training.crop_check
#: --n 600 --zooms 0.95,1.05 --weightings`` (an early checkpoint; 574 of 600 pasted
#: test crops detected): mean |age difference| from the crop-only prediction of the
#: same face is 1.60 years at zoom 1.00 (eyes x2), 1.87 at 0.95, 2.21 at 1.05, and
#: 1.70 with all five points weighted alike. The measured framing is the closest.
CROP_ZOOM: float = 1.0


@dataclass(frozen=True)
class AlignedFace:
    """One aligned face: the UTKFace-framed crop and what the model sees."""

    crop: np.ndarray  # (200, 200, 3) uint8, UTKFace framing
    face_input: np.ndarray  # (INPUT_SIZE, INPUT_SIZE, 3) uint8 = prepare_face(crop)
    crop_affine: np.ndarray  # (2, 3) float64: photo (x, y) -> face_input pixel (x, y)


def landmarks_array(landmarks: dict[str, tuple[float, float]]) -> np.ndarray:
    """Landmark dict -> (5, 2) float array in :data:`LANDMARK_NAMES` order."""
    missing = [name for name in LANDMARK_NAMES if name not in landmarks]
    if missing:
        raise ValueError(f"landmarks lack {missing}")
    return np.array([landmarks[name] for name in LANDMARK_NAMES], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points onto ``dst``.

    Returns the 2x3 matrix M with ``dst ~ M @ [x, y, 1]``. Closed form: no RANSAC,
    so the same landmarks always give the same crop.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (K>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    s0 = src - mu_s
    d0 = dst - mu_d
    var_s = float(w @ (s0**2).sum(1))
    if var_s < 1e-12:
        raise ValueError("landmarks coincide; cannot align")
    cov = (d0 * w[:, None]).T @ s0  # 2x2
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1.0
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d)) / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of ``outer(inner(p))``."""
    a = np.vstack([outer, [0.0, 0.0, 1.0]])
    b = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (K, 2) points."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def affine_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def resize_affine(src_size: int, dst_size: int) -> np.ndarray:
    """Pixel-centre-correct 2x3 map of ``cv2.resize`` from ``src_size`` to ``dst_size`` px."""
    s = dst_size / src_size
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def crop_transform(
    landmarks: np.ndarray,
    template: np.ndarray = TEMPLATE,
    weights: np.ndarray = LANDMARK_WEIGHTS,
    zoom: float = CROP_ZOOM,
    crop_size: int = UTKFACE_CROP_SIZE,
) -> np.ndarray:
    """2x3 map from photo pixels to the ``crop_size`` UTKFace-framed crop.

    ``zoom`` > 1 shows more context around the face (scales about the crop centre).
    """
    m = similarity_transform(landmarks, template, weights)
    if zoom != 1.0:
        c = (crop_size - 1) / 2.0
        z = np.array([[1 / zoom, 0.0, c - c / zoom], [0.0, 1 / zoom, c - c / zoom]])
        m = compose(z, m)
    return m


def warp_crop(photo: np.ndarray, m: np.ndarray, crop_size: int = UTKFACE_CROP_SIZE) -> np.ndarray:
    """Warp ``photo`` by the 2x3 map ``m`` into a ``crop_size`` square, without aliasing.

    ``warpAffine`` samples bilinearly, which aliases when a big face is shrunk, so
    the region the crop covers is first shrunk with INTER_AREA (as training's resize
    does) and only the remaining small rotation/scale is done by the warp. Borders
    beyond the photo are replicated, like a face near the edge of a UTKFace source.
    """
    h, w = photo.shape[:2]
    scale = affine_scale(m)
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], np.float64)
    box = apply_affine(inv, corners)
    x0 = int(np.clip(np.floor(box[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(box[:, 1].max()) + 3, y0 + 1, h))
    region = photo[y0:y1, x0:x1]
    m_region = compose(m, _inverse_shift(x0, y0))
    if scale < 0.8:
        # Shrink the region to about the crop's resolution first (anti-aliased).
        f = min(1.0, scale * 1.25)
        rw, rh = max(1, round(region.shape[1] * f)), max(1, round(region.shape[0] * f))
        fx, fy = rw / region.shape[1], rh / region.shape[0]
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        down = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        m_region = compose(m_region, cv2.invertAffineTransform(down))
    return cv2.warpAffine(
        np.ascontiguousarray(region),
        m_region,
        (crop_size, crop_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _inverse_shift(x0: int, y0: int) -> np.ndarray:
    """Map region pixels back to photo pixels (region = photo[y0:, x0:])."""
    return np.array([[1.0, 0.0, float(x0)], [0.0, 1.0, float(y0)]])


def align_face(
    photo: np.ndarray,
    landmarks: np.ndarray | dict[str, tuple[float, float]],
    *,
    template: np.ndarray = TEMPLATE,
    weights: np.ndarray = LANDMARK_WEIGHTS,
    zoom: float = CROP_ZOOM,
    input_size: int = INPUT_SIZE,
) -> AlignedFace:
    """Crop one face of an RGB photo into UTKFace framing and prepare it for the model."""
    pts = landmarks_array(landmarks) if isinstance(landmarks, dict) else np.asarray(landmarks, np.float64)
    m = crop_transform(pts, template, weights, zoom)
    crop = warp_crop(photo, m)
    face_input = prepare_face(crop, input_size)
    crop_affine = compose(resize_affine(UTKFACE_CROP_SIZE, input_size), m)
    return AlignedFace(crop=crop, face_input=face_input, crop_affine=crop_affine)
