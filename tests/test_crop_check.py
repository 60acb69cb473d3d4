"""The crop-only vs pasted-photo check: its synthetic photos and scoring are what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from training.crop_check import CANVAS, nearest_face, paste_crop, scores
from training.measure_template import pick_face, transform_error


class _Face:
    def __init__(self, box):
        self.box = box


def test_paste_crop_places_a_scaled_crop_on_the_canvas():
    crop = np.zeros((200, 200, 3), np.uint8)
    crop[:, :, 0] = 250  # red square on a (blurred, mirrored) red background
    crop[90:110, 90:110] = (0, 0, 250)  # blue centre marks where the crop's centre lands
    rng = np.random.default_rng(3)
    for _ in range(5):
        pasted = paste_crop(crop, rng)
        assert pasted.photo.shape == (CANVAS[1], CANVAS[0], 3) and pasted.photo.dtype == np.uint8
        assert 1.5 <= pasted.scale <= 2.5 and abs(pasted.angle) <= 10
        cx, cy = (int(round(v)) for v in pasted.centre)
        assert tuple(pasted.photo[cy, cx]) == pytest.approx((0, 0, 250), abs=10)
    with pytest.raises(ValueError, match="does not fit"):
        paste_crop(crop, rng, canvas=(300, 300))


def test_nearest_face_and_scores():
    faces = [_Face((0, 0, 100, 100)), _Face((400, 300, 100, 100))]
    assert nearest_face(faces, (440, 350), 50) is faces[1]
    assert nearest_face(faces, (250, 250), 50) is None
    truth = np.array([[30, 0, 1], [40, 1, 2]], float)
    s = scores(np.array([32.0, 36.0]), np.array([0, 0]), np.array([1, 2]), truth)
    assert s == {"age_mae": 3.0, "gender_acc": 0.5, "ethnicity_acc": 1.0}
    assert np.isnan(scores(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 3)))["age_mae"])


def test_template_measurement_helpers():
    faces = [_Face((0, 0, 50, 50)), _Face((60, 60, 80, 80))]
    assert pick_face(faces, 200) is faces[1] and pick_face([], 200) is None
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert transform_error(identity) == pytest.approx((0.0, 0.0, 0.0))
    zoomed = np.array([[1.1, 0, 0], [0, 1.1, 0]])
    log_scale, shift, angle = transform_error(zoomed)
    assert log_scale == pytest.approx(np.log(1.1)) and shift == pytest.approx(np.hypot(9.95, 9.95)) and angle == 0


def test_paste_affine_is_the_exact_paste_transform():
    import cv2

    from model.align import warp_crop

    yy, xx = np.mgrid[0:200, 0:200] / 200
    crop = np.clip(np.stack([127 + 100 * np.sin(6 * xx), 127 + 100 * np.cos(5 * yy), 127 + 80 * np.sin(4 * (xx + yy))], 2), 0, 255).astype(np.uint8)
    pasted = paste_crop(crop, np.random.default_rng(0))
    assert abs(pasted.angle) > 1
    back = warp_crop(pasted.photo, cv2.invertAffineTransform(pasted.affine))
    inner = slice(25, -25)  # the rotated paste's corners hold background
    assert np.abs(back[inner, inner].astype(int) - crop[inner, inner].astype(int)).mean() < 4
