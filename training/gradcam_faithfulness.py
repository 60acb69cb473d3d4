"""Are the Grad-CAM maps faithful? An occlusion study of model.gradcam's heat maps.

Hiding a map's hottest pixels must lower the explained output (the target class
probability, or the expected age in years) more than hiding random blobs of the same
area. Run on the astronaut portrait and four variants (shipped with scikit-image)
on scikit-image's 100 LFW faces and, when a UTKFace folder is configured, on UTKFace
crops. ``--card`` stores the LFW and UTKFace results in the model card, where the Explain
page reads how far to trust each map of the model it serves:

    python -m training.gradcam_faithfulness [--model PATH] [--utkface 200] [--lfw 100] \
        [--methods gradcam scorecam] [--card model/model_card.json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from model.align import apply_affine
from model.card import MAP_TRUST_T, map_verdict
from model.heatmap_draw import predicted_target
from model.labels import HEAD_NAMES
from model.results import CAM_METHODS, DEFAULT_CAM_METHOD
from model.settings import INPUT_SIZE

if TYPE_CHECKING:
    from model.gradcam import GradCamExplainer

#: Share of the face crop hidden by :func:`occlusion_test`.
OCCLUSION_FRACTION: float = 0.2


@dataclass(frozen=True)
class OcclusionResult:
    """Occlusion check of one heat map: how much hiding pixels lowers the explained output.

    The explained output is the target class probability (gender, ethnicity) or the
    expected age in years (age). A faithful map has ``drop_hot > drop_random``.
    """

    head: str
    target: int | None
    fraction: float  # share of the face crop hidden
    base: float  # explained output of the untouched face
    drop_hot: float  # base minus the output with the hottest pixels hidden
    drop_random: float  # mean of base minus the output with random blobs hidden

    @property
    def margin(self) -> float:
        return self.drop_hot - self.drop_random


def box_region(box: tuple[float, float, float, float], crop_affine: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(size, size) bool: the face crop's pixels inside a photo box (x, y, w, h).

    The aligned crop shows more than the detected face (UTKFace framing keeps hair
    and some background); this picks the face box's own pixels.
    """
    x, y, w, h = (float(v) for v in box)
    corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    m = np.asarray(crop_affine, np.float64).reshape(2, 3)
    quad = apply_affine(m, corners)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def occlusion_masks(
    heatmap: np.ndarray,
    fraction: float = OCCLUSION_FRACTION,
    rng: np.random.Generator | None = None,
    n_random: int = 8,
    grid: int = 4,
    region: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The hottest ``fraction`` of the ``region``'s pixels, and ``n_random`` random masks of the same size.

    Random masks are the top pixels of a smooth random field on the CAM's own
    ``grid`` (blobs shaped like a heat map's), not scattered single pixels, whose
    salt-and-pepper edges would hurt a CNN for reasons of their own.
    heatmap (S, S) float; region (S, S) bool, default everything.
    Returns hot (S, S) bool and random (n_random, S, S) bool.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = rng if rng is not None else np.random.default_rng(0)
    heat = np.asarray(heatmap, np.float64)
    eligible = np.ones(heat.shape, bool) if region is None else np.asarray(region, bool)
    if eligible.shape != heat.shape or not eligible.any():
        raise ValueError(f"region must be a non-empty bool mask of shape {heat.shape}")
    size, k = heat.size, int(round(fraction * int(eligible.sum())))

    def top(values: np.ndarray) -> np.ndarray:
        ranked = np.where(eligible, values, -np.inf).ravel()
        order = np.lexsort((rng.random(size), -ranked))  # highest first, ties broken at random
        mask = np.zeros(size, bool)
        mask[order[:k]] = True
        return mask.reshape(heat.shape)

    fields = [cv2.resize(rng.random((grid, grid)).astype(np.float32), heat.shape[::-1],
                         interpolation=cv2.INTER_CUBIC) for _ in range(n_random)]
    return top(heat), np.stack([top(f) for f in fields]) if fields else np.zeros((0, *heat.shape), bool)


def occlude(face_input: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of the (S, S, 3) uint8 face with ``mask`` pixels set to the face's mean colour."""
    out = np.array(face_input, np.uint8, copy=True)
    out[mask] = np.round(face_input.reshape(-1, 3).mean(0)).astype(np.uint8)
    return out


def occlusion_test(
    explainer: GradCamExplainer,
    face_input: np.ndarray,
    heatmap: np.ndarray,
    head: str,
    target: int | str | None = None,
    fraction: float = OCCLUSION_FRACTION,
    rng: np.random.Generator | None = None,
    n_random: int = 8,
    region: np.ndarray | None = None,
) -> OcclusionResult:
    """How much hiding the hottest ``fraction`` of the face (``region``, e.g.
    :func:`box_region`; default the whole crop) lowers the explained output, against
    hiding random blobs of the same area. One batched forward pass."""
    face = np.asarray(face_input, np.uint8)
    index, _ = explainer.resolve_target(head, target, face)
    hot, random_masks = occlusion_masks(heatmap, fraction, rng, n_random, explainer.cam_shape[0], region)
    batch = np.stack([face, occlude(face, hot), *(occlude(face, m) for m in random_masks)])
    values = explainer.explained_output(batch, head, index).astype(np.float64)
    drops = values[0] - values[1:]
    return OcclusionResult(head=head, target=index, fraction=fraction, base=float(values[0]),
                        drop_hot=float(drops[0]), drop_random=float(drops[1:].mean()) if n_random else 0.0)


@dataclass(frozen=True)
class OcclusionSummary:
    """Occlusion check of one head and method over several faces."""

    head: str
    method: str
    faces: int
    drop_hot: float  # mean over faces
    drop_random: float  # mean over faces
    wins: int  # faces where hiding the hot pixels hurt more than hiding random blobs
    t_stat: float  # paired t statistic of (hot - random) over faces; nan below 2 faces

    @property
    def faithful(self) -> bool:
        return self.drop_hot > self.drop_random

    @property
    def verdict(self) -> str:
        """As the Explain page words it (model.card.MAP_TRUST_T): a higher mean drop alone can be chance."""
        return {"trusted": "faithful", "unclear": f"not clearly (t < {MAP_TRUST_T:g})",
                "against": "NOT faithful"}[map_verdict(self.t_stat if np.isfinite(self.t_stat)
                                                       else float(self.faithful))]  # one face: no t


def summarize_occlusion(
    explainer: GradCamExplainer,
    face_inputs: Sequence[np.ndarray],
    regions: Sequence[np.ndarray | None] | None = None,
    targets: Sequence[Mapping[str, int | str | None]] | None = None,
    methods: Sequence[str] = (DEFAULT_CAM_METHOD,),
    heads: Sequence[str] = HEAD_NAMES,
    fraction: float = OCCLUSION_FRACTION,
    n_random: int = 16,
    seed: int = 0,
) -> list[OcclusionSummary]:
    """:func:`occlusion_test` of every head and method over many faces, averaged.

    face_inputs: (S, S, 3) uint8 crops; regions: per face, the pixels eligible for
    hiding (None: the whole crop); targets: per face, {head: class} (default predicted).
    """
    out = []
    for method in methods:
        for head in heads:
            hot, rand = [], []
            for i, face in enumerate(face_inputs):
                target = (targets[i] if targets else {}).get(head)
                heat = explainer.heatmap(face, head, target, method)
                result = occlusion_test(explainer, face, heat, head, target, fraction, np.random.default_rng(seed),
                                      n_random, regions[i] if regions else None)
                hot.append(result.drop_hot)
                rand.append(result.drop_random)
            diff = np.array(hot) - np.array(rand)
            t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 and diff.std() > 0 else np.nan
            out.append(OcclusionSummary(head, method, len(diff), float(np.mean(hot)), float(np.mean(rand)),
                                           int((diff > 0).sum()), float(t)))
    return out


def _shifted(photo: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(photo)
    h, w = photo.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = photo[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def astronaut_variants() -> dict[str, np.ndarray]:
    """skimage's astronaut (shipped with the package, 512x512 RGB uint8) and flipped,
    shifted, brighter and darker copies: a few real faces that need no download."""
    from skimage import data

    photo = data.astronaut()
    return {
        "original": photo,
        "flipped": np.ascontiguousarray(photo[:, ::-1]),
        "shifted": _shifted(photo, 40, 25),
        "brighter": np.clip(photo * 1.3 + 10, 0, 255).astype(np.uint8),
        "darker": (photo * 0.7).astype(np.uint8),
    }


def occlusion_on_photos(
    analyzer: Any,
    photos: Mapping[str, np.ndarray],
    explainer: GradCamExplainer | None = None,
    methods: Sequence[str] = (DEFAULT_CAM_METHOD,),
    **kwargs: Any,
) -> list[OcclusionSummary]:
    """Occlusion check of the first face of each photo, hiding pixels of its detected box.

    ``analyzer``: a ``model.analyzer.FaceAnalyzer`` (anything whose ``analyze(photo)``
    returns faces with ``box``, ``face_input``, ``crop_affine`` and predicted classes).
    """
    if explainer is None:
        from model.gradcam import GradCamExplainer

        explainer = GradCamExplainer(analyzer.model)
    faces = []
    for name, photo in photos.items():
        found = analyzer.analyze(photo)
        if not found:
            raise ValueError(f"no face found in photo {name!r}")
        faces.append(found[0])
    return summarize_occlusion(
        explainer,
        [face.face_input for face in faces],
        regions=[box_region(face.box, face.crop_affine, explainer.input_size) for face in faces],
        targets=[{head: predicted_target(face, head) for head in HEAD_NAMES} for face in faces],
        methods=methods,
        **kwargs,
    )


def lfw_faces(size: int = INPUT_SIZE) -> list[np.ndarray]:
    """scikit-image's 100 Labeled Faces in the Wild crops (25 x 25 grayscale), prepared as face
    inputs: a hundred different people on any machine, where the astronaut is one."""
    from skimage import data

    from model.preprocess import prepare_face

    crops = (np.clip(data.lfw_subset()[:100], 0.0, 1.0) * 255).round().astype(np.uint8)  # then 100 non-faces
    return [prepare_face(np.repeat(crop[..., None], 3, axis=2), size) for crop in crops]


def utkface_faces(directory: str | Path, n: int, seed: int = 0, size: int = INPUT_SIZE) -> list[np.ndarray]:
    """``n`` UTKFace aligned crops, drawn at random (fixed seed), prepared as face inputs.

    The chips are already framed like the training data: each is a whole face crop.
    """
    from model.image_io import ImageError, load_image
    from model.preprocess import prepare_face

    files = sorted(Path(directory).glob("*.jpg"))
    if len(files) < n:
        raise ValueError(f"need {n} UTKFace images in {directory}, found {len(files)}")
    faces = []
    for i in np.random.default_rng(seed).choice(len(files), n, replace=False):
        try:
            faces.append(prepare_face(load_image(files[i]), size))
        except ImageError:
            continue
    return faces


def card_section(sets: Mapping[str, tuple[str, Sequence[OcclusionSummary]]],
                 fraction: float = OCCLUSION_FRACTION) -> dict[str, Any]:
    """The model card's ``faithfulness`` section (model.card.ModelCard.map_checks reads it):
    ``sets`` maps a short name to (what the faces are, the summaries of every method and head)."""
    out: dict[str, Any] = {"fraction": fraction, "sets": {}}
    for name, (label, rows) in sets.items():
        results: dict[str, dict[str, Any]] = {}
        for row in rows:
            results.setdefault(row.method, {})[row.head] = {
                "drop_hot": round(row.drop_hot, 4), "drop_random": round(row.drop_random, 4), "wins": row.wins,
                "t": round(row.t_stat, 2) if np.isfinite(row.t_stat) else None}
        out["sets"][name] = {"label": label, "faces": max((row.faces for row in rows), default=0),
                             "results": results}
    return out


def write_to_card(path: str | Path, section: Mapping[str, Any], model_path: str | Path | None = None) -> Path:
    """Store ``section`` as the card's ``faithfulness``, merging with the sets it already has
    (a Score-CAM run later does not erase an earlier Grad-CAM one). With ``model_path``, refuse
    a card that was written for another model file: the study describes the weights it ran on."""
    from model.card import card_to_update

    card = card_to_update(path, model_path)
    merged = dict(card.faithfulness or {})
    merged["fraction"] = section["fraction"]
    sets = dict(merged.get("sets") or {})
    for name, entry in section["sets"].items():
        old = sets.get(name) or {}
        same_faces = old.get("faces") == entry["faces"]
        results = {**(old.get("results") or {}), **entry["results"]} if same_faces else dict(entry["results"])
        sets[name] = {**entry, "results": results}
    merged["sets"] = sets
    card.faithfulness = merged
    return card.write(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gradcam_faithfulness", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: FACELENS_MODEL or the shipped one)")
    parser.add_argument("--utkface", type=int, default=200,
                        help="also this many UTKFace crops when UTKFACE_DIR (or ../shared) has them")
    parser.add_argument("--lfw", type=int, default=100, help="this many of scikit-image's LFW faces (at most 100)")
    parser.add_argument("--methods", nargs="+", default=list(CAM_METHODS), choices=list(CAM_METHODS))
    parser.add_argument("--card", default=None,
                        help="store the LFW and UTKFace results in this model card (the Explain page shows them)")
    args = parser.parse_args(argv)
    if not 0 <= args.lfw <= 100:
        parser.error("--lfw takes 0 to 100 faces")

    from model import settings
    from model.analyzer import FaceAnalyzer
    from model.gradcam import GradCamExplainer

    path = Path(args.model) if args.model else settings.model_path()
    analyzer = FaceAnalyzer(path)
    explainer = GradCamExplainer(analyzer.model)
    print(f"model: {path}")
    print(f"hide {OCCLUSION_FRACTION:.0%} of the face (mean colour): hottest pixels vs random blobs (16 draws); "
          "drop of the target probability, or of the expected age in years")
    sets = [("astronaut x5 (face box)",
             occlusion_on_photos(analyzer, astronaut_variants(), explainer, args.methods))]
    for_card: dict[str, tuple[str, list[OcclusionSummary]]] = {}
    folder = settings.utkface_dir()
    if folder is not None and args.utkface > 0:
        faces = utkface_faces(folder, args.utkface, size=explainer.input_size)
        for_card["utkface"] = (f"{len(faces)} UTKFace faces",
                               summarize_occlusion(explainer, faces, methods=args.methods, n_random=8))
    if args.lfw > 0:
        faces = lfw_faces(explainer.input_size)[: args.lfw]
        for_card["lfw"] = (f"{len(faces)} small grayscale LFW faces",
                           summarize_occlusion(explainer, faces, methods=args.methods, n_random=8))
    sets += list(for_card.values())
    for label, rows in sets:
        for row in rows:
            print(f"{label:26s} {row.method:10s} {row.head:10s} hot {row.drop_hot:+8.3f}  random "
                  f"{row.drop_random:+8.3f}  hot wins {row.wins:3d}/{row.faces:<3d} t={row.t_stat:+5.1f}  "
                  f"{row.verdict}")
    if args.card:
        if not for_card:
            parser.error("--card needs UTKFace or LFW faces (the astronaut is one person)")
        print(f"stored in {write_to_card(args.card, card_section(for_card), path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
