"""Drawing heat maps on photos: carry a face-crop heat map back into photo pixels, colour
it onto the photo, build a face's :class:`~model.results.Explanation` and save it.

Pure OpenCV/numpy apart from the explainer passed in (model.gradcam.GradCamExplainer,
which holds the network), so the drawing is tested on tiny arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from model.align import apply_affine
from model.labels import HEAD_CLASSES, HEAD_NAMES, check_head
from model.results import DEFAULT_CAM_METHOD, Explanation
from model.settings import INPUT_SIZE

if TYPE_CHECKING:
    from model.gradcam import GradCamExplainer

#: Opacity of the colour map where the heat is highest (the app's default).
OVERLAY_ALPHA: float = 0.45


class FaceLike(Protocol):
    """What :func:`face_explanations` needs of a face (``model.results.FaceResult`` has it)."""

    index: int
    face_input: np.ndarray  # (S, S, 3) uint8 RGB: exactly what the model saw
    crop_affine: np.ndarray  # (2, 3) float64: photo (x, y) -> face_input pixel (x, y)


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
    box = apply_affine(inv, corners)
    x0, y0 = max(int(np.floor(box[:, 0].min())), 0), max(int(np.floor(box[:, 1].min())), 0)
    x1, y1 = min(int(np.ceil(box[:, 0].max())) + 1, w), min(int(np.ceil(box[:, 1].max())) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    inside = (u >= -0.5) & (u < cw - 0.5) & (v >= -0.5) & (v < ch - 0.5)
    return x0, y0, x1, y1, inside


def face_region_mask(crop_affine: np.ndarray, photo_shape: tuple[int, ...], crop_size: int = INPUT_SIZE) -> np.ndarray:
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
    photo: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA, region: np.ndarray | None = None
) -> np.ndarray:
    """Blend the colour-mapped ``heatmap`` onto ``photo``, at opacity ``alpha`` where the
    heat is 1 and fading with the heat to none where it is 0.

    With one opacity for every pixel the cold part of the face region took JET's dark
    blue, and a hard-edged blue square sat on the face; fading with the heat colours
    only what mattered. photo (H, W, 3) uint8 RGB, heatmap (H, W) in [0, 1], optional
    region (H, W) bool: only there is colour blended (the face), elsewhere the photo
    stays as it was. Returns a new (H, W, 3) uint8 RGB image.
    """
    photo = _check_photo(photo)
    heat = np.asarray(heatmap)
    if heat.shape != photo.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match photo {photo.shape[:2]}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mask = np.ones(heat.shape, bool) if region is None else np.asarray(region, bool)
    out = photo.copy()
    ys, xs = np.nonzero(mask)
    if len(ys):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        window = photo[y0:y1, x0:x1].astype(np.float32)
        part = np.clip(np.nan_to_num(heat[y0:y1, x0:x1].astype(np.float32)), 0.0, 1.0)
        weight = (float(alpha) * part * mask[y0:y1, x0:x1])[..., None]
        blended = window * (1.0 - weight) + colorize(part).astype(np.float32) * weight
        out[y0:y1, x0:x1] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


def _check_photo(photo: np.ndarray) -> np.ndarray:
    arr = np.asarray(photo)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"photo must be an (H, W, 3) uint8 RGB array, got {arr.shape} {arr.dtype}")
    return arr



def predicted_target(face: FaceLike, head: str) -> int | str | None:
    """Default target: the class the analyzer reported (flip-averaged), if the face has one."""
    predicted = getattr(face, head, None)
    return predicted if isinstance(predicted, str) and predicted in HEAD_CLASSES.get(head, ()) else None


def face_explanations(
    explainer: GradCamExplainer,
    photo: np.ndarray,
    face: FaceLike,
    heads: Iterable[str] = HEAD_NAMES,
    targets: Mapping[str, int | str | None] | None = None,
    method: str = DEFAULT_CAM_METHOD,
    alpha: float = OVERLAY_ALPHA,
) -> dict[str, Explanation]:
    """Explanations of several heads of one face (one batched tf-keras-vis call).

    photo: (H, W, 3) uint8 RGB, the photo ``face`` was found in. A missing or None
    target means the face's predicted class (``face.gender`` / ``face.ethnicity``
    when present, else the model's argmax).
    """
    photo = _check_photo(photo)
    heads = tuple(heads)
    wanted = {head: (targets or {}).get(head) for head in heads}
    wanted = {head: predicted_target(face, head) if t is None else t for head, t in wanted.items()}
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


def face_explanation(
    explainer: GradCamExplainer,
    photo: np.ndarray,
    face: FaceLike,
    head: str,
    target: int | str | None = None,
    method: str = DEFAULT_CAM_METHOD,
    alpha: float = OVERLAY_ALPHA,
) -> Explanation:
    """One head's explanation of one face (what ``FaceAnalyzer.explain`` returns)."""
    check_head(head)
    return face_explanations(explainer, photo, face, (head,), {head: target}, method, alpha)[head]


def reblend(explanation: Explanation, photo: np.ndarray, face: FaceLike, alpha: float) -> Explanation:
    """``explanation`` at another opacity: only the blend is redone, so an opacity slider
    never recomputes Grad-CAM or the warp. Equal to :func:`face_explanations` at ``alpha``."""
    photo = _check_photo(photo)
    region = face_region_mask(face.crop_affine, photo.shape, explanation.crop_heatmap.shape[0])
    return dataclasses.replace(explanation, overlay=overlay(photo, explanation.photo_heatmap, alpha, region))


def explanation_paths(directory: str | Path, stem: str, face_index: int, head: str) -> tuple[Path, Path]:
    """``DIR/S_face{i}_{H}.png`` (overlay) and ``.npy`` (photo heat map).

    The suffix is appended, never swapped: ``with_suffix`` would take everything after
    a stem's last dot for a suffix, so ``two.faces`` and ``a.jpg.chip`` lose their ends
    and different faces and heads would share one file."""
    base = f"{stem}_face{face_index}_{head}"
    return Path(directory) / f"{base}.png", Path(directory) / f"{base}.npy"


def save_explanation(expl: Explanation, directory: str | Path, stem: str, face_index: int) -> tuple[Path, Path]:
    """Write the overlay PNG and the (H, W) float32 photo heat map; returns both paths."""
    png, npy = explanation_paths(directory, stem, face_index, expl.head)
    png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png), cv2.cvtColor(expl.overlay, cv2.COLOR_RGB2BGR)):  # OpenCV writes BGR
        raise OSError(f"could not write {png}")
    np.save(npy, np.asarray(expl.photo_heatmap, np.float32))
    return png, npy
