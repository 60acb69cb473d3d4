"""Does the photo pipeline reproduce the training crops? Crop-only vs pasted-photo scores.

Takes N real UTKFace crops from the content-hash "test" split and scores them twice:

(a) crop-only: ``prepare_face(crop)`` straight into the model (what evaluation does);
(b) pasted: each crop, scaled 1.5-2.5x, slightly rotated, pasted at a random place
    into a larger photo with a blurred mirror-padded background, then the FULL
    ``FaceAnalyzer.analyze`` (intake, MTCNN, alignment, batched model call).

If alignment reproduces UTKFace framing, (b) is close to (a). (c) crops each photo
with the exact inverse of its paste: what remains between (a) and (c) is resampling
(upscaling, JPEG-free but blurred), and between (c) and (b) is landmark noise. Other
crop zooms and landmark weightings are scored on the same detections (``--zooms``,
``--weightings``) to tune ``model.align``.

    FACELENS_MODEL=/tmp/best.keras python -m training.crop_check --n 600 --zooms 0.95,1.05,1.1 --weightings
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Canvas of the synthetic photos (w, h): room for a 2.5x (500 px) crop plus a margin.
CANVAS: tuple[int, int] = (800, 600)


@dataclass(frozen=True)
class Pasted:
    photo: np.ndarray  # (H, W, 3) uint8 RGB
    centre: tuple[float, float]  # where the crop's centre landed (photo px)
    scale: float
    angle: float
    affine: np.ndarray  # (2, 3) crop pixel (x, y) -> photo pixel: the exact paste transform


def paste_crop(
    crop: np.ndarray,
    rng: np.random.Generator,
    canvas: tuple[int, int] = CANVAS,
    scale_range: tuple[float, float] = (1.5, 2.5),
    max_angle: float = 10.0,
) -> Pasted:
    """Scale, rotate and paste ``crop`` at a random place over a blurred background.

    The background is the crop mirror-padded to the canvas and heavily blurred, so
    colours match but no second sharp face appears.
    """
    cw, ch = canvas
    scale = float(rng.uniform(*scale_range))
    side = int(round(crop.shape[0] * scale))
    if side + 8 > min(cw, ch):
        raise ValueError(f"a {side} px crop does not fit a {cw}x{ch} canvas")
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
    angle = float(rng.uniform(-max_angle, max_angle))
    # Rotate inside a larger canvas with a mask, so corners stay background.
    rot = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, 1.0)
    rotated = cv2.warpAffine(big, rot, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = cv2.warpAffine(np.full((side, side), 255, np.uint8), rot, (side, side), flags=cv2.INTER_LINEAR)
    x0 = int(rng.integers(4, cw - side - 4 + 1))
    y0 = int(rng.integers(4, ch - side - 4 + 1))
    padded = cv2.copyMakeBorder(big, y0, ch - side - y0, x0, cw - side - x0, cv2.BORDER_REFLECT_101)
    background = cv2.GaussianBlur(padded, (0, 0), sigmaX=25)
    photo = background.copy()
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    region = photo[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    photo[y0 : y0 + side, x0 : x0 + side] = (rotated * alpha + region * (1 - alpha) + 0.5).astype(np.uint8)
    centre = (x0 + (side - 1) / 2, y0 + (side - 1) / 2)
    from model.align import compose, resize_affine

    affine = compose(rot, resize_affine(crop.shape[0], side))
    affine[:, 2] += (x0, y0)
    return Pasted(photo=photo, centre=centre, scale=scale, angle=angle, affine=affine)


def nearest_face(faces: list, centre: tuple[float, float], max_distance: float):
    """The face whose box centre is nearest ``centre`` (None if none within ``max_distance``)."""
    best, best_d = None, max_distance
    for face in faces:
        x, y, w, h = face.box
        d = float(np.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1]))
        if d <= best_d:
            best, best_d = face, d
    return best


def scores(age: np.ndarray, gender: np.ndarray, ethnicity: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Age MAE, gender and ethnicity accuracy of predictions vs (N, 3) true labels."""
    if not len(truth):
        return {"age_mae": float("nan"), "gender_acc": float("nan"), "ethnicity_acc": float("nan")}
    return {
        "age_mae": float(np.abs(np.asarray(age) - truth[:, 0]).mean()),
        "gender_acc": float((np.asarray(gender) == truth[:, 1]).mean()),
        "ethnicity_acc": float((np.asarray(ethnicity) == truth[:, 2]).mean()),
    }


def _fmt(s: dict[str, float]) -> str:
    return f"age MAE {s['age_mae']:.2f}  gender acc {s['gender_acc']:.3f}  ethnicity acc {s['ethnicity_acc']:.3f}"


def _agreement(out, ref, mask: np.ndarray) -> str:
    """How far predictions move from the crop-only ones on the same faces."""
    age = np.abs(out.age - ref.age[mask]).mean()
    gender = (out.gender.argmax(1) == ref.gender.argmax(1)[mask]).mean()
    eth = (out.ethnicity.argmax(1) == ref.ethnicity.argmax(1)[mask]).mean()
    return f"vs crop-only: mean |age diff| {age:.2f}, same gender {gender:.3f}, same ethnicity {eth:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="UTKFace folder (default: settings.utkface_dir())")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: settings.model_path())")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zooms", default="", help="comma-separated crop zooms also scored on the same detections")
    parser.add_argument("--max-angle", type=float, default=10.0, help="random in-plane rotation of the pasted crop (deg)")
    parser.add_argument("--weightings", action="store_true",
                        help="also score the landmark weightings of training.measure_template on the same detections")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from model import settings
    from model.align import CROP_ZOOM, LANDMARK_WEIGHTS, align_face, warp_crop
    from model.analyzer import FaceAnalyzer
    from model.labels import ETHNICITIES, GENDERS
    from model.preprocess import prepare_face
    from training.data import load_rgb, sample_split
    from training.measure_template import WEIGHTINGS

    folder = args.dir or settings.utkface_dir()
    if folder is None:
        print("no UTKFace folder (set UTKFACE_DIR or pass --dir)", file=sys.stderr)
        return 2
    chosen = sample_split(folder, "test", args.n, args.seed)
    rng = np.random.default_rng(args.seed + 1)  # where and how each crop is pasted
    analyzer = FaceAnalyzer(args.model)
    print(f"model {analyzer.model_path} (flip_tta={analyzer.flip_tta}); {len(chosen)} test-split crops, "
          f"pasted at 1.5-2.5x, rotated up to {args.max_angle:g} deg", flush=True)
    # Alternative framings, scored on the very same detections as the analyzer's.
    configs: dict[str, tuple[float, np.ndarray]] = {}
    for z in (float(v) for v in args.zooms.split(",") if v.strip()):
        configs[f"zoom {z:.2f}"] = (z, LANDMARK_WEIGHTS)
    if args.weightings:
        for name, weights in WEIGHTINGS.items():
            configs[f"weights {name}"] = (CROP_ZOOM, np.array(weights, np.float64))

    truth, crop_inputs, found = [], [], []
    pipeline_rows = []  # (age, gender idx, ethnicity idx) from analyze()
    pipeline_inputs = []
    oracle_inputs = []  # the exact inverse of the paste: perfect framing, only resampling differs
    config_inputs: dict[str, list[np.ndarray]] = {name: [] for name in configs}
    for sample in tqdm(chosen, desc="photos", file=sys.stderr):
        crop = load_rgb(sample)
        if crop is None:
            continue
        truth.append((sample.age, sample.gender, sample.ethnicity))
        crop_inputs.append(prepare_face(crop))
        pasted = paste_crop(crop, rng, max_angle=args.max_angle)
        faces = analyzer.analyze(pasted.photo)
        face = nearest_face(faces, pasted.centre, max_distance=0.25 * 200 * pasted.scale)
        found.append(face is not None)
        if face is None:
            continue
        pipeline_rows.append((face.age, GENDERS.index(face.gender), ETHNICITIES.index(face.ethnicity)))
        pipeline_inputs.append(face.face_input)
        oracle_inputs.append(prepare_face(warp_crop(pasted.photo, cv2.invertAffineTransform(pasted.affine))))
        for name, (zoom, weights) in configs.items():
            config_inputs[name].append(align_face(pasted.photo, face.landmarks, zoom=zoom, weights=weights).face_input)

    truth_arr = np.array(truth, np.float64).reshape(-1, 3)
    found_arr = np.array(found, bool)
    crop_out = analyzer.predictor(np.stack(crop_inputs))
    crop_all = scores(crop_out.age, crop_out.gender.argmax(1), crop_out.ethnicity.argmax(1), truth_arr)
    crop_hit = scores(
        crop_out.age[found_arr], crop_out.gender.argmax(1)[found_arr], crop_out.ethnicity.argmax(1)[found_arr],
        truth_arr[found_arr],
    )
    rows = np.array(pipeline_rows, np.float64).reshape(-1, 3)
    pipe = scores(rows[:, 0], rows[:, 1], rows[:, 2], truth_arr[found_arr])
    print(f"detection rate (pasted photos): {found_arr.mean():.3f} ({found_arr.sum()}/{len(found_arr)})")
    print(f"(a) crop-only, all {len(truth_arr)}:  {_fmt(crop_all)}")
    print(f"(a) crop-only, the {found_arr.sum()} detected: {_fmt(crop_hit)}")
    print(f"(b) pasted photo, full analyzer:  {_fmt(pipe)}")
    if pipeline_inputs:
        print(f"    {_agreement(analyzer.predictor(np.stack(pipeline_inputs)), crop_out, found_arr)}")
        oracle = analyzer.predictor(np.stack(oracle_inputs))
        s = scores(oracle.age, oracle.gender.argmax(1), oracle.ethnicity.argmax(1), truth_arr[found_arr])
        print(f"(c) pasted photo, exact inverse of the paste (framing error 0): {_fmt(s)}")
        print(f"    {_agreement(oracle, crop_out, found_arr)}")
    for name, inputs in config_inputs.items():
        if not inputs:
            continue
        out = analyzer.predictor(np.stack(inputs))
        s = scores(out.age, out.gender.argmax(1), out.ethnicity.argmax(1), truth_arr[found_arr])
        print(f"    same detections, {name:20s} {_fmt(s)}; {_agreement(out, crop_out, found_arr)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
