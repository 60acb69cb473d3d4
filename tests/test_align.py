"""Alignment on synthetic arrays: the transform is exact, eyes end level, the crop
reproduces a known framing, and crop_affine maps photo pixels to the model input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.align import (
    LANDMARK_NAMES,
    TEMPLATE,
    affine_scale,
    align_face,
    apply_affine,
    compose,
    crop_transform,
    landmarks_array,
    similarity_transform,
    warp_crop,
)
from model.settings import INPUT_SIZE, UTKFACE_CROP_SIZE


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


def _textured_crop(size: int = UTKFACE_CROP_SIZE) -> np.ndarray:
    """A smooth but asymmetric 'face crop' (low frequencies survive resampling)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    r = 127 + 100 * np.sin(2 * np.pi * xx * 1.5)
    g = 127 + 100 * np.cos(2 * np.pi * yy * 1.2)
    b = 127 + 80 * np.sin(2 * np.pi * (xx + 2 * yy))
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def _photo_with_crop(m_crop_to_photo: np.ndarray, shape=(700, 900)) -> tuple[np.ndarray, np.ndarray]:
    """Place the textured crop into a photo by a similarity; returns (photo, landmarks in photo px)."""
    crop = _textured_crop()
    photo = cv2.warpAffine(crop, m_crop_to_photo, (shape[1], shape[0]), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT_101)
    return photo, apply_affine(m_crop_to_photo, TEMPLATE)


@pytest.mark.parametrize("params", [(1.0, 0, 0, 0), (2.5, 30, 100, -40), (0.3, -75, 5, 7), (1.7, 179, -3, 400)])
def test_similarity_transform_recovers_a_known_transform(params):
    m = _similarity(*params)
    src = np.random.default_rng(1).uniform(0, 200, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, apply_affine(m, src)), m, atol=1e-9)


def test_similarity_never_reflects_and_rejects_degenerate_points():
    src = np.array([[0.0, 0], [10, 0], [0, 10]])
    mirrored = src * [-1, 1]
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), TEMPLATE)
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), np.ones((4, 2)))


def test_weights_follow_the_heavier_points():
    src = TEMPLATE.copy()
    dst = TEMPLATE.copy()
    dst[2] += [0, 30]  # the nose disagrees
    eyes_only = similarity_transform(src, dst, np.array([1, 1, 0, 0, 0]))
    np.testing.assert_allclose(eyes_only, _similarity(1, 0, 0, 0), atol=1e-9)
    assert not np.allclose(similarity_transform(src, dst), _similarity(1, 0, 0, 0), atol=1e-3)


def test_landmarks_array_order_and_missing_keys():
    lm = {name: (float(i), float(10 * i)) for i, name in enumerate(LANDMARK_NAMES)}
    np.testing.assert_array_equal(landmarks_array(lm)[:, 0], np.arange(5))
    del lm["nose"]
    with pytest.raises(ValueError, match="nose"):
        landmarks_array(lm)


def test_template_is_a_plausible_utkface_framing():
    # Eyes level and left of each other, nose between eyes and mouth, face centred.
    le, re, nose, ml, mr = TEMPLATE
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]
    assert abs(le[1] - re[1]) < 3 and le[1] < nose[1] < ml[1]
    assert 70 < re[0] - le[0] < 85  # UTKFace crops are tight: eyes ~0.39 of the width apart
    assert abs(TEMPLATE[:, 0].mean() - UTKFACE_CROP_SIZE / 2) < 10


@pytest.mark.parametrize("params", [(1.0, 0, 200, 150), (2.8, 20, 300, 50), (0.6, -35, 400, 300)])
def test_align_recovers_the_crop_from_a_rotated_scaled_photo(params):
    m = _similarity(*params)
    photo, landmarks = _photo_with_crop(m)
    aligned = align_face(photo, landmarks)
    crop = _textured_crop()
    assert aligned.crop.shape == (UTKFACE_CROP_SIZE, UTKFACE_CROP_SIZE, 3)
    assert aligned.face_input.shape == (INPUT_SIZE, INPUT_SIZE, 3) and aligned.face_input.dtype == np.uint8
    inner = slice(10, -10)
    error = np.abs(aligned.crop[inner, inner].astype(int) - crop[inner, inner].astype(int)).mean()
    # A wrong scale, shift or rotation of even a few pixels gives errors of tens of levels.
    assert error < 6, error


def test_eyes_end_level_and_on_the_template():
    m = _similarity(1.9, 27, 250, 120)
    photo, landmarks = _photo_with_crop(m)
    t = crop_transform(landmarks)
    eyes = apply_affine(t, landmarks[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.5  # as level as the template's eyes (0.2 px apart)
    np.testing.assert_allclose(apply_affine(t, landmarks), TEMPLATE, atol=1e-6)


def test_crop_affine_maps_photo_points_to_model_input_pixels():
    m = _similarity(1.4, -12, 220, 90)
    photo, landmarks = _photo_with_crop(m)
    aligned = align_face(photo, landmarks)
    mapped = apply_affine(aligned.crop_affine, landmarks)
    expected = (TEMPLATE + 0.5) * INPUT_SIZE / UTKFACE_CROP_SIZE - 0.5
    np.testing.assert_allclose(mapped, expected, atol=1e-6)
    # And the pixels agree: sample the photo at a point and face_input where it maps.
    x, y = 380.0, 260.0
    u, v = apply_affine(aligned.crop_affine, [[x, y]])[0]
    assert 5 < u < INPUT_SIZE - 5 and 5 < v < INPUT_SIZE - 5
    assert np.abs(photo[int(round(y)), int(round(x))].astype(int) - aligned.face_input[int(round(v)), int(round(u))].astype(int)).max() < 20


def test_zoom_shows_more_context():
    m = _similarity(1.0, 0, 300, 200)
    _, landmarks = _photo_with_crop(m)
    tight = crop_transform(landmarks, zoom=1.0)
    loose = crop_transform(landmarks, zoom=1.25)
    assert affine_scale(loose) == pytest.approx(affine_scale(tight) / 1.25)
    c = (UTKFACE_CROP_SIZE - 1) / 2
    centre_photo = apply_affine(cv2.invertAffineTransform(tight), [[c, c]])
    np.testing.assert_allclose(apply_affine(loose, centre_photo), [[c, c]], atol=1e-9)


def test_face_at_the_photo_edge_is_replicated_not_black():
    photo = np.full((120, 160, 3), 200, np.uint8)
    m = _similarity(0.5, 0, -40, -20)  # most of the crop lies outside the photo
    crop = warp_crop(photo, cv2.invertAffineTransform(m))
    assert crop.shape == (UTKFACE_CROP_SIZE, UTKFACE_CROP_SIZE, 3)
    assert crop.min() == 200


def test_big_faces_are_shrunk_without_aliasing():
    # A fine stripe pattern far above the crop's resolution must average to grey,
    # not alias into bold stripes.
    photo = np.zeros((1200, 1200, 3), np.uint8)
    photo[:, ::2] = 255
    m = compose(_similarity(1 / 5.0, 0, 0, 0), _similarity(1, 0, -100, -100))
    crop = warp_crop(photo, m)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 10
