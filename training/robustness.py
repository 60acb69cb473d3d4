"""How much an answer moves when the photo changes but the face does not.

    python -m training.robustness --model model/facelens_mobilenetv2_160.keras \
        --source utkface=../shared/data/utkface/UTKFace --source celeba=../shared/data/celeba --split val
    python -m training.robustness --photo sample   # one photo, resized and cropped, through the analyzer
    python -m training.robustness --whole-photos --source utkface=../shared/data/utkface/UTKFace --limit 150

Two studies on prepared (detected + aligned) faces of a split:

* framing jitter: each face is re-framed ``views`` times (zoom +-10%, shift +-5% of
  the side, rotation +-5 deg: what landmark noise and a different photo of the same
  scene do to the crop); reported are the mean per-face standard deviation of the
  gender probability and of the age, and the share of faces whose gender call flips;
  with ``--whole-photos`` the same re-framings are applied to each whole photo of the
  split instead, and every view goes through detection and alignment as an upload
  does, so alignment undoes most of the re-framing: what is left is what a user sees
  when the same photo is cropped or rotated a little differently;
* degraded photos: quarter resolution, JPEG quality 20, grayscale, blur, each scored
  like the clean faces.

``--hidden-hair`` instead scores the gender of adult faces with the hair around the face
greyed out (the crop's outer 15% of each side, or its top 15%), as short or tied-back
hair, a hat or a headscarf hide it: how much a model reads gender from hair.
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


def reframe(image: np.ndarray, rng: np.random.Generator, zoom: float = 0.1, shift: float = 0.05,
            rotation_deg: float = 5.0, border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """One random re-framing of an (H, W, 3) image about its centre, same size: zoom
    within +-``zoom``, rotation within +-``rotation_deg``, shift within +-``shift`` of each side."""
    h, w = image.shape[:2]
    scale = 1.0 + rng.uniform(-zoom, zoom)
    angle = rng.uniform(-rotation_deg, rotation_deg)
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
    m[:, 2] += rng.uniform(-shift, shift, 2) * np.array([w, h])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def jitter_views(face: np.ndarray, views: int, rng: np.random.Generator, zoom: float = 0.1,
                 shift: float = 0.05, rotation_deg: float = 5.0) -> np.ndarray:
    """(views, S, S, 3) re-framings of one (S, S, 3) face; border pixels reflected."""
    return np.stack([reframe(face, rng, zoom, shift, rotation_deg) for _ in range(views)])


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
    rng = np.random.default_rng(seed)
    p_female, ages = [], []
    for start in range(0, len(faces), 32):
        batch = faces[start : start + 32]
        out = predictor(np.concatenate([jitter_views(f, views, rng) for f in batch]))
        p_female.append(out.gender[:, 1].reshape(len(batch), views))
        ages.append(out.age.reshape(len(batch), views))
    if not p_female:
        return spread_summary(np.zeros((0, views)), np.zeros((0, views)))
    return spread_summary(np.concatenate(p_female), np.concatenate(ages))


def spread_summary(p_female: np.ndarray, ages: np.ndarray) -> dict:
    """(faces, views) answers -> the mean per-face spreads and the shares of faces whose shown
    gender call or 9-group age changes between views."""
    from model.labels import age_group_names

    calls = p_female >= 0.5
    groups = age_group_names(ages) if ages.size else np.zeros(ages.shape, str)
    mean = lambda values: round(float(np.mean(values)), 4) if len(values) else None  # noqa: E731
    return {
        "faces": int(len(p_female)),
        "views": int(p_female.shape[1]),
        "gender_probability_sd": mean(p_female.std(1)),
        "age_sd_years": None if not len(ages) else round(float(np.mean(ages.std(1))), 3),
        "gender_call_flips": mean(calls.any(1) & ~calls.all(1)),
        "age_group_changes": mean((groups != groups[:, :1]).any(1)),
    }


def photo_jitter_crops(detector, photos, views: int = 8, seed: int = 0,
                       progress: str | None = None) -> tuple[np.ndarray, int]:
    """Each whole photo re-framed ``views`` times (replicated borders), every view detected and
    aligned as an upload is (the largest face): (photos, views, crop, crop, 3) UTKFace-framed
    crops of the photos whose face was found in every view, and how many photos were left out.
    Model-independent, so several models share one detection pass (see :func:`photo_jitter_spread`).
    ``progress`` names a tqdm bar over the photos (MTCNN runs ``views`` times per photo)."""
    from model.align import align_face

    rng = np.random.default_rng(seed)
    kept, missed = [], 0
    if progress is not None:
        from tqdm.auto import tqdm

        photos = tqdm(photos, desc=progress, unit="photo")
    for photo in photos:
        crops = []
        for _ in range(views):
            view = reframe(photo, rng, border=cv2.BORDER_REPLICATE)
            found = detector.detect_all(view)
            if not found:
                break
            biggest = max(found, key=lambda d: d.box[2] * d.box[3])
            crops.append(align_face(view, biggest.landmarks).crop)
        if len(crops) == views:
            kept.append(np.stack(crops))
        else:
            missed += 1
    return (np.stack(kept) if kept else np.zeros((0, views, 1, 1, 3), np.uint8)), missed


def photo_jitter_spread(predictor, crops: np.ndarray) -> dict:
    """:func:`spread_summary` of a predictor's answers on :func:`photo_jitter_crops`' crops."""
    from model.preprocess import prepare_face

    n, views = crops.shape[:2]
    if not n:
        return spread_summary(np.zeros((0, views)), np.zeros((0, views)))
    faces = np.stack([prepare_face(c, predictor.input_size) for c in crops.reshape(-1, *crops.shape[2:])])
    out = predictor(faces)
    return spread_summary(out.gender[:, 1].reshape(n, views), out.age.reshape(n, views))


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


#: Hair greyed out in the hidden-hair study: (name, share of each side, share of the top).
HAIR_HIDINGS: tuple[tuple[str, float, float], ...] = (("plain", 0.0, 0.0), ("sides", 0.15, 0.0), ("top", 0.0, 0.15))


def hide_hair(faces: np.ndarray, side: float, top: float, grey: int = 128) -> np.ndarray:
    """(N, S, S, 3) aligned crops with the outer ``side`` of each side and the top ``top``
    of the height set to one grey: the same region training hides (training.augment.hair_mask)."""
    import tensorflow as tf

    from training.augment import hair_mask

    mask = hair_mask(faces.shape[1], tf.fill([1, 1, 1], float(side)), tf.fill([1, 1, 1], float(top))).numpy()[0]
    return np.where(mask > 0, np.asarray(grey, faces.dtype), faces)


def hidden_hair_report(predictor, faces: np.ndarray, labels: dict[str, np.ndarray], min_age: int = 20) -> dict:
    """Gender accuracy of women and men, plain and with the hair hidden (:data:`HAIR_HIDINGS`).

    Faces with a known age under ``min_age`` are left out: a child's hair is most of what
    tells its gender, so hiding it measures something else."""
    gender, age = labels["gender"], labels["age"]
    keep = (gender >= 0) & ((age < 0) | (age >= min_age))
    faces, gender = faces[keep], gender[keep]
    report: dict = {"n_women": int((gender == 1).sum()), "n_men": int((gender == 0).sum())}
    for name, side, top in HAIR_HIDINGS:
        right = np.asarray(predictor(hide_hair(faces, side, top)).gender).argmax(1) == gender
        report[name] = {who: round(float(right[gender == code].mean()), 4) if (gender == code).any() else None
                        for who, code in (("women", 1), ("men", 0))}
    return report


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
    p.add_argument("--whole-photos", action="store_true",
                   help="re-frame each source's whole photos of the split and detect + align every view "
                        "(as an upload is) instead of re-framing prepared crops")
    p.add_argument("--hidden-hair", action="store_true",
                   help="instead: gender accuracy of adult faces with the hair around the face greyed out")
    p.add_argument("--card", default=None,
                   help="--whole-photos or --hidden-hair with one --model: store the figures in the card "
                        "(photo_jitter, hidden_hair) "
                        "(refused when the card was written for another model file)")
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
    if args.card and not ((args.whole_photos or args.hidden_hair) and len(models) == 1):
        p.error("--card needs --whole-photos or --hidden-hair, and one --model")
    if args.whole_photos:
        return _whole_photos(args, models)
    if args.hidden_hair:
        return _hidden_hair(args, models)
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


def _report(args, models: list[str], report: dict, card_field: str) -> int:
    """Print the report; with --card, merge the (one) model's figures into that card field."""
    from model.card import card_to_update

    if args.card:
        card = card_to_update(args.card, models[0])
        setattr(card, card_field, {**getattr(card, card_field), **report[models[0]]})
        card.write(args.card)
    print(json.dumps(report))
    return 0


def _hidden_hair(args, models: list[str]) -> int:
    from model.architecture import load_model
    from model.calibration import load_for_model
    from model.card import card_to_update
    from model.inference import Predictor
    from training.prepare import load_prepared
    from training.sources import label_arrays

    if args.card:
        card_to_update(args.card, models[0])  # refuse a wrong card before any work
    report: dict = {}
    for model_file in models:
        predictor = Predictor(load_model(model_file), flip_tta=not args.no_tta, calibration=load_for_model(model_file))
        per_source = {}
        for spec in args.source:
            records, faces = load_prepared(spec, Path(args.prepared_dir), predictor.input_size, split=args.split)
            if len(faces):
                per_source[spec.name] = {**hidden_hair_report(predictor, faces, label_arrays(records)),
                                         "split": args.split}
        report[model_file] = per_source
        print(f"{model_file}: {json.dumps(per_source)}", file=sys.stderr)
    return _report(args, models, report, "hidden_hair")


def _whole_photos(args, models: list[str]) -> int:
    """--whole-photos: one detection pass per source, shared by every model."""
    from model.architecture import load_model
    from model.calibration import load_for_model
    from model.card import card_to_update
    from model.face_detect import FaceDetector
    from model.image_io import ImageError, load_image
    from model.inference import Predictor

    if args.card:
        card_to_update(args.card, models[0])  # refuse a wrong card before minutes of detection
    detector = FaceDetector()
    predictors = {m: Predictor(load_model(m), flip_tta=not args.no_tta, calibration=load_for_model(m)) for m in models}
    report: dict = {m: {} for m in models}
    for spec in args.source:
        records, _ = spec.read()
        records = [r for r in records if r.split == args.split]
        records = [records[i] for i in jitter_sample(np.arange(len(records)), args.limit)]  # a fair sample
        photos = []
        for record in records:
            try:
                photos.append(load_image(record.path if record.pixels is None else record.pixels))
            except ImageError:
                continue
        crops, missed = photo_jitter_crops(detector, photos, args.views, progress=f"re-framing {spec.name}")
        for model_file, predictor in predictors.items():
            report[model_file][spec.name] = {**photo_jitter_spread(predictor, crops), "photos": len(photos),
                                             "left_out_no_face_in_a_view": missed}
        print(f"{spec.name}: " + json.dumps({m: r[spec.name] for m, r in report.items()}), file=sys.stderr)
    return _report(args, models, report, "photo_jitter")


if __name__ == "__main__":
    raise SystemExit(main())
