"""Drawing heat maps on photos (model.heatmap_draw) on tiny arrays: warp, region, overlay, files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model import heatmap_draw
from model.results import Explanation
from model.settings import INPUT_SIZE

S = INPUT_SIZE


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 photo -> crop map: rotate by ``angle_deg``, scale, then shift."""
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def mapped_inside(crop_affine: np.ndarray, shape: tuple[int, int], size: int = S) -> np.ndarray:
    """Independent reference: photo pixels whose centre maps into the crop square."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    u = crop_affine[0, 0] * xs + crop_affine[0, 1] * ys + crop_affine[0, 2]
    v = crop_affine[1, 0] * xs + crop_affine[1, 1] * ys + crop_affine[1, 2]
    return (u >= -0.5) & (u < size - 0.5) & (v >= -0.5) & (v < size - 0.5)



def test_warp_to_photo_places_the_map_and_zeroes_outside_the_face():
    heat = np.zeros((S, S), np.float32)
    heat[:, : S // 2] = 1.0  # left half of the crop is hot
    # crop = photo region x 100..164, y 50..114 (a 64 px face) at scale S / 64.
    k = S / 64
    affine = np.array([[k, 0.0, -100.0 * k], [0.0, k, -50.0 * k]])
    out = heatmap_draw.warp_to_photo(heat, affine, (240, 320, 3))
    assert out.shape == (240, 320) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[50:114, 100:130].min() > 0.99  # left half of the face, hot
    assert out[50:114, 134:164].max() < 0.01  # right half, cold
    outside = ~mapped_inside(affine, (240, 320))
    assert np.all(out[outside] == 0.0) and outside.sum() == 240 * 320 - 64 * 64


def test_warp_to_photo_rotated_face_near_the_border_is_zero_outside():
    heat = np.random.default_rng(0).random((S, S)).astype(np.float32) * 0.5 + 0.5  # > 0 everywhere
    affine = similarity(1.5, 25.0, 40.0, -30.0)  # rotated, partly off the photo
    out = heatmap_draw.warp_to_photo(heat, affine, (120, 150))
    inside = mapped_inside(affine, (120, 150))
    assert inside.any() and (~inside).any()
    assert np.all(out[~inside] == 0.0)
    assert out[inside].min() > 0.4  # the whole face region carries the (positive) map
    np.testing.assert_array_equal(heatmap_draw.face_region_mask(affine, (120, 150)), inside)


def test_warp_to_photo_face_off_the_photo_gives_zeros():
    affine = np.array([[1.0, 0.0, 5000.0], [0.0, 1.0, 0.0]])
    out = heatmap_draw.warp_to_photo(np.ones((S, S), np.float32), affine, (50, 60))
    assert out.shape == (50, 60) and not out.any()


def test_overlay_blends_only_inside_the_region_and_fades_with_the_heat():
    photo = np.full((40, 50, 3), 100, np.uint8)
    heat = np.zeros((40, 50), np.float32)
    heat[10:20, 10:20] = 1.0
    heat[20:24, 10:20] = 0.5
    region = np.zeros((40, 50), bool)
    region[5:25, 5:25] = True
    red = heatmap_draw.colorize(np.ones((1, 1)))[0, 0]
    assert red[0] > 100 and red[2] < 50  # RGB order: hot is red, not blue
    out = heatmap_draw.overlay(photo, heat, alpha=0.5, region=region)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    np.testing.assert_array_equal(out[~region], photo[~region])
    np.testing.assert_allclose(out[15, 15], (photo[15, 15] * 0.5 + red * 0.5), atol=1)
    half = heatmap_draw.colorize(np.full((1, 1), 0.5))[0, 0]
    np.testing.assert_allclose(out[22, 15], (photo[22, 15] * 0.75 + half * 0.25), atol=1)
    cold = region & (heat == 0)  # the face region where nothing mattered keeps the photo's colours
    np.testing.assert_array_equal(out[cold], photo[cold])
    np.testing.assert_array_equal(heatmap_draw.overlay(photo, heat, alpha=0.0), photo)
    full = heatmap_draw.overlay(photo, heat, alpha=1.0)
    hot = heat == 1.0
    np.testing.assert_array_equal(full[hot], heatmap_draw.colorize(heat)[hot])
    np.testing.assert_array_equal(full[heat == 0], photo[heat == 0])
    with pytest.raises(ValueError):
        heatmap_draw.overlay(photo, heat, alpha=1.5)
    with pytest.raises(ValueError):
        heatmap_draw.overlay(photo, heat[:10])


def test_save_explanation_writes_the_overlay_and_the_photo_heat_map(tmp_path):
    heat = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    overlay = np.zeros((30, 40, 3), np.uint8)
    overlay[..., 0] = 255  # pure red in RGB
    expl = Explanation("gender", 1, "female", "gradcam", np.zeros((S, S), np.float32), heat, overlay)
    png, npy = heatmap_draw.save_explanation(expl, tmp_path / "cams", "party", 2)
    assert (png.name, npy.name) == ("party_face2_gender.png", "party_face2_gender.npy")
    np.testing.assert_array_equal(np.load(npy), heat)
    back = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, overlay)
