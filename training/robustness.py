"""How much an answer moves when the photo changes but the face does not.

    python -m training.robustness --model model/facelens_mobilenetv2_160.keras \
        --source utkface=../shared/data/utkface/UTKFace --source celeba=../shared/data/celeba --split val
    python -m training.robustness --photo sample   # one photo, resized and cropped, through the analyzer

Two studies on prepared (detected + aligned) faces of a split:

* framing jitter: each face is re-framed ``views`` times (zoom +-10%, shift +-5% of
  the side, rotation +-5 deg: what landmark noise and a different photo of the same
  scene do to the crop); reported are the mean per-face standard deviation of the
  gender probability and of the age, and the share of faces whose gender call flips;
* degraded photos: quarter resolution, JPEG quality 20, grayscale, blur, each scored
  like the clean faces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

#: Degradations of a face crop, as uploads have them.
DEGRADATIONS: tuple[str, ...] = ("quarter_resolution", "jpeg_20", "grayscale", "blur")


def jitter_views(face: np.ndarray, views: int, rng: np.random.Generator, zoom: float = 0.1,
                 shift: float = 0.05, rotation_deg: float = 5.0) -> np.ndarray:
    """(views, S, S, 3) re-framings of one (S, S, 3) face; border pixels reflected."""
    size = face.shape[0]
    centre = (size - 1) / 2.0
    out = np.empty((views, *face.shape), np.uint8)
    for v in range(views):
        scale = 1.0 + rng.uniform(-zoom, zoom)
        angle = rng.uniform(-rotation_deg, rotation_deg)
        m = cv2.getRotationMatrix2D((centre, centre), angle, scale)
        m[:, 2] += rng.uniform(-shift, shift, 2) * size
        out[v] = cv2.warpAffine(face, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def jitter_sample(faces: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` faces drawn at random (in their order): a split's first faces are not a
    fair sample (UTKFace files sort by age, so its first 600 validation faces average 20 years)."""
    if len(faces) <= limit:
        return faces
    return faces[np.sort(np.random.default_rng(seed).choice(len(faces), size=limit, replace=False))]


def jitter_spread(predictor, faces: np.ndarray, views: int = 8, seed: int = 0) -> dict:
    """Mean per-face spread of the answers over ``views`` re-framings of each face.

    Besides the spreads, the shares of faces whose *shown* answer changes with the framing:
    the gender call and the 9-group age. A network can shrink the spreads by answering
    less confidently (probabilities nearer 0.5, ages nearer the middle) without its calls
    changing any less, so the spreads alone can flatter it.
    """
    from model.labels import age_group_names

    rng = np.random.default_rng(seed)
    gender_sd, age_sd, flips, regroups = [], [], [], []
    for start in range(0, len(faces), 32):
        batch = faces[start : start + 32]
        stacked = np.concatenate([jitter_views(f, views, rng) for f in batch])
        out = predictor(stacked)
        p_female = out.gender[:, 1].reshape(len(batch), views)
        ages = out.age.reshape(len(batch), views)
        gender_sd.extend(p_female.std(1))
        age_sd.extend(ages.std(1))
        calls = p_female >= 0.5
        flips.extend(calls.any(1) & ~calls.all(1))
        groups = age_group_names(ages)
        regroups.extend((groups != groups[:, :1]).any(1))
    return {
        "faces": int(len(faces)),
        "views": views,
        "gender_probability_sd": round(float(np.mean(gender_sd)), 4),
        "age_sd_years": round(float(np.mean(age_sd)), 3),
        "gender_call_flips": round(float(np.mean(flips)), 4),
        "age_group_changes": round(float(np.mean(regroups)), 4),
    }


def degrade(face: np.ndarray, kind: str) -> np.ndarray:
    """One (S, S, 3) uint8 face degraded as named in :data:`DEGRADATIONS`."""
    size = face.shape[0]
    if kind == "quarter_resolution":
        small = cv2.resize(face, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    if kind == "jpeg_20":
        ok, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 20])
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else face
    if kind == "grayscale":
        gray = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if kind == "blur":
        return cv2.GaussianBlur(face, (0, 0), 1.5)
    raise ValueError(f"unknown degradation {kind!r}; choose from {DEGRADATIONS}")


def degrade_all(faces: np.ndarray, kind: str) -> np.ndarray:
    """(N, S, S, 3) faces, each degraded as named in :data:`DEGRADATIONS`."""
    return np.stack([degrade(f, kind) for f in faces])


def photo_sweep(analyzer, photo: np.ndarray, widths: tuple[int, ...] = (320, 480, 640, 800, 1024),
                crops: tuple[float, ...] = (0.0, 0.03, 0.06, 0.1)) -> dict:
    """One photo resized to several widths and cropped by a few percent on each side,
    each run through the whole analyzer: how far do the biggest face's answers swing?"""
    rows = []
    h, w = photo.shape[:2]
    for crop in crops:
        dy, dx = int(round(h * crop)), int(round(w * crop))
        cropped = photo[dy : h - dy, dx : w - dx]
        for width in widths:
            height = int(round(cropped.shape[0] * width / cropped.shape[1]))
            interp = cv2.INTER_AREA if width < cropped.shape[1] else cv2.INTER_LINEAR
            faces = analyzer.analyze(cv2.resize(cropped, (width, height), interpolation=interp))
            if not faces:
                rows.append({"crop": crop, "width": width, "found": False})
                continue
            face = max(faces, key=lambda f: f.box[2] * f.box[3])
            rows.append({"crop": crop, "width": width, "found": True, "age": round(face.age, 2),
                         "p_female": round(face.gender_probabilities["female"], 4)})
    found = [r for r in rows if r["found"]]
    p = np.array([r["p_female"] for r in found])
    ages = np.array([r["age"] for r in found])
    return {
        "variants": len(rows),
        "found": len(found),
        "p_female_min": round(float(p.min()), 4) if len(p) else None,
        "p_female_max": round(float(p.max()), 4) if len(p) else None,
        "p_female_sd": round(float(p.std()), 4) if len(p) else None,
        "age_min": round(float(ages.min()), 2) if len(ages) else None,
        "age_max": round(float(ages.max()), 2) if len(ages) else None,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from model import settings
    from model.architecture import load_model
    from model.calibration import load_for_model
    from model.inference import Predictor
    from training.prepare import SourceSpec, load_prepared

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None, help="model file(s) (default: the shipped model)")
    p.add_argument("--photo", default=None,
                   help="instead: sweep one photo's size and framing through the whole analyzer "
                        "('sample' = the app's sample portrait)")
    p.add_argument("--source", action="append", default=[], type=SourceSpec.parse,
                   help="name=path[,group=...][,split=...] as given to training.prepare")
    p.add_argument("--prepared-dir", default="runs/prepared")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, default=600, help="faces per source for the jitter study")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--no-tta", action="store_true")
    args = p.parse_args(argv)

    models = args.model or [str(settings.model_path())]
    report: dict = {}
    if args.photo:
        from model.analyzer import FaceAnalyzer
        from model.image_io import load_image

        if args.photo == "sample":
            from skimage import data

            photo = data.astronaut()
        else:
            photo = load_image(args.photo)
        for model_file in models:
            sweep = photo_sweep(FaceAnalyzer(model_file, flip_tta=False if args.no_tta else None), photo)
            report[model_file] = sweep
            print(f"{model_file}: " + json.dumps({k: v for k, v in sweep.items() if k != "rows"}), file=sys.stderr)
        print(json.dumps(report))
        return 0
    if not args.source:
        p.error("give --source (prepared faces) or --photo")
    for model_file in models:
        model = load_model(model_file)
        predictor = Predictor(model, flip_tta=not args.no_tta, calibration=load_for_model(model_file))
        per_source = {}
        for spec in args.source:
            _, faces = load_prepared(spec, Path(args.prepared_dir), predictor.input_size, split=args.split)
            if not len(faces):
                continue
            per_source[spec.name] = jitter_spread(predictor, jitter_sample(faces, args.limit), views=args.views)
        report[model_file] = per_source
        print(f"{model_file}: {json.dumps(per_source)}", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
