"""Evaluate a model on aligned UTKFace-style crops, or on whole photos.

    python -m training.evaluate --data-dir DIR [--model PATH] [--json OUT]
    python -m training.evaluate --photos DIR [--split val] [--limit N]

``--photos`` takes any labelled folder (a ``labels.csv`` folder, a FairFace CSV or
UTKFace file names) and runs every photo through the app's whole pipeline
(``FaceAnalyzer.analyze``: detection, alignment, model); the JSON then holds the
detection rate, age MAE and bias per age group, 9-group age accuracy and
within-one-group, gender accuracy per age group, the ethnicity confusion and the
share of "Unsure" gender calls (see :mod:`training.photo_eval`).

Runs every parseable image in DIR (a UTKFace folder or Kaggle CSV) through the
same preprocessing and compiled predictor as the app and prints ONE JSON object:
n, age_mae, gender_accuracy, ethnicity_accuracy, per-group breakdowns, share of
ages within 5 years, confusion matrices and calibration errors. Names that don't
parse and files that don't decode are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training.data import SPLITS, DataIndex, Sample, index_dataset


def predict_samples(predictor, samples: list[Sample], size: int, batch: int = 256, progress: bool = True):
    """Decode, prepare and predict in chunks; returns (kept samples, HeadOutputs parts, n undecodable)."""
    from tqdm import tqdm

    from model.preprocess import prepare_face
    from training.data import load_rgb

    kept: list[Sample] = []
    parts = []
    bad = 0
    bar = tqdm(total=len(samples), desc="evaluate", unit="img", disable=not progress, file=sys.stderr, mininterval=1.0)
    for start in range(0, len(samples), batch):
        faces = []
        for sample in samples[start : start + batch]:
            rgb = load_rgb(sample)
            if rgb is None:
                bad += 1
                continue
            faces.append(prepare_face(rgb, size))
            kept.append(sample)
        if faces:
            parts.append(predictor(np.stack(faces)))
        bar.update(min(batch, len(samples) - start))
    bar.close()
    return kept, parts, bad


def evaluate_samples(model, samples: list[Sample], flip_tta: bool = True, progress: bool = True,
                     calibration=None) -> dict:
    """Metrics of ``model`` on ``samples`` (see training.metrics.full_report)."""
    from model.inference import Predictor
    from training.metrics import full_report

    predictor = Predictor(model, flip_tta=flip_tta, calibration=calibration)
    kept, parts, bad = predict_samples(predictor, samples, predictor.input_size, progress=progress)
    if not kept:
        return {"n": 0, "undecodable": bad, "error": "no decodable images"}

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    report = full_report(
        ages=np.array([s.age for s in kept]),
        genders=np.array([s.gender for s in kept]),
        ethnicities=np.array([s.ethnicity for s in kept]),
        predicted_age=cat("age"),
        age_interval=cat("age_interval"),
        gender_probs=cat("gender"),
        ethnicity_probs=cat("ethnicity"),
    )
    report["undecodable"] = bad
    report["flip_tta"] = flip_tta
    return report


def evaluate_faces(model, faces: np.ndarray, labels: dict[str, np.ndarray], flip_tta: bool = True,
                   predictor=None) -> dict:
    """Partial-label metrics of ``model`` on already prepared faces (training.prepare's
    aligned crops: the same pixels the app's pipeline makes from those photos)."""
    from model.inference import Predictor

    predictor = predictor or Predictor(model, flip_tta=flip_tta)
    if len(faces) == 0:
        return {"n": 0}
    return report_outputs(predictor(faces), labels, predictor.flip_tta)


def report_outputs(out, labels: dict[str, np.ndarray], flip_tta: bool) -> dict:
    """Partial-label metrics of answers already computed (model.results.HeadOutputs)."""
    from training.metrics import partial_report

    report = partial_report(labels, out.age, out.age_interval, out.gender, out.ethnicity)
    report["flip_tta"] = flip_tta
    return report


def evaluate_index(model, index: DataIndex, split: str | None, flip_tta: bool = True, progress: bool = True,
                   calibration=None) -> dict:
    samples = index.samples if split in (None, "all") else index.by_split(split)
    report = evaluate_samples(model, samples, flip_tta=flip_tta, progress=progress, calibration=calibration)
    report["skipped_unparseable"] = index.unparseable
    report["skipped_unreadable"] = index.unreadable + report.pop("undecodable", 0)
    report["split"] = split or "all"
    return report


def main(argv: list[str] | None = None) -> int:
    from model import settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data-dir", help="folder of UTKFace-style crops or a Kaggle CSV")
    what.add_argument("--photos", help="labelled folder of whole photos, run through the whole analyzer "
                                       "([NAME=]PATH[,group=age][,split=a/b/c] as for training sources; "
                                       "the training NAME gives the training split)")
    what.add_argument("--source", action="append", type=_spec,
                      help="name=path[,...] as given to training.prepare: score its prepared (aligned) faces")
    p.add_argument("--prepared-dir", default="runs/prepared", help="--source: training.prepare's output folder")
    p.add_argument("--degraded", action="store_true",
                   help="--source: also score quarter-resolution, JPEG-20, grayscale and blurred copies")
    p.add_argument("--limit", type=int, default=None, help="--photos: at most N photos (a reproducible sample)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the JSON object to this file")
    p.add_argument("--split", choices=("all", *SPLITS), default="all",
                   help="evaluate only one content-hash split of DIR (default: every image)")
    p.add_argument("--no-tta", action="store_true", help="disable horizontal-flip averaging")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from model.architecture import load_model

    model_file = Path(args.model) if args.model else settings.model_path()
    if args.photos:
        return _evaluate_photos(args, model_file)
    if args.source:
        return _evaluate_prepared(args, model_file)
    try:
        index = index_dataset(args.data_dir, dedupe=False)
        model = load_model(model_file)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from model.calibration import load_for_model

    report = evaluate_index(model, index, args.split, flip_tta=not args.no_tta, progress=not args.quiet,
                            calibration=load_for_model(model_file))
    report["model"] = str(model_file)
    text = json.dumps(report)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0 if report.get("n", 0) > 0 else 1


def degraded_reports(predictor, faces: np.ndarray, labels: dict[str, np.ndarray]) -> dict:
    """Partial-label metrics of ``predictor`` (model.inference.Predictor) on each degraded copy of ``faces``."""
    from training.robustness import DEGRADATIONS, degrade_all

    return {kind: evaluate_faces(None, degrade_all(faces, kind), labels, predictor=predictor) for kind in DEGRADATIONS}


def _spec(text: str):
    from training.prepare import SourceSpec

    return SourceSpec.parse(text)


def _evaluate_prepared(args, model_file: Path) -> int:
    from model.architecture import load_model
    from model.calibration import load_for_model
    from model.inference import Predictor
    from training.prepare import load_prepared
    from training.sources import label_arrays

    model = load_model(model_file)
    predictor = Predictor(model, flip_tta=not args.no_tta, calibration=load_for_model(model_file))
    report: dict = {"model": str(model_file), "split": args.split, "flip_tta": not args.no_tta, "sources": {}}
    for spec in args.source:
        records, faces = load_prepared(spec, Path(args.prepared_dir), predictor.input_size, split=args.split)
        labels = label_arrays(records)
        entry = evaluate_faces(model, faces, labels, predictor=predictor)
        if args.degraded and len(faces):
            entry["degraded"] = degraded_reports(predictor, faces, labels)
        report["sources"][spec.name] = entry
    print(json.dumps(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0


def _evaluate_photos(args, model_file: Path) -> int:
    from model.analyzer import FaceAnalyzer
    from training.photo_eval import analyze_records, photo_report
    from training.prepare import SourceSpec

    try:
        # [NAME=]PATH[,group=age][,split=50/50/0], as for training sources: the split hashes the
        # source name with each identity, so give the training name to score its held-out part.
        first = args.photos.split(",", 1)[0]
        records, read = SourceSpec.parse(args.photos if "=" in first else f"photos={args.photos}").read()
        analyzer = FaceAnalyzer(model_file, flip_tta=False if args.no_tta else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.split != "all":
        records = [r for r in records if r.split == args.split]
    if args.limit and len(records) > args.limit:
        pick = np.random.default_rng(0).choice(len(records), size=args.limit, replace=False)
        records = [records[i] for i in sorted(pick)]
    results = analyze_records(analyzer, records, progress=not args.quiet)
    report = photo_report(records, results)
    report.update({"model": str(model_file), "photos_dir": args.photos, "split": args.split,
                   "flip_tta": analyzer.flip_tta, "skipped": read.skipped})
    print(json.dumps(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0 if report["photos"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
