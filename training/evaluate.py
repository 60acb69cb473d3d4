"""Evaluate a model on aligned UTKFace-style crops.

    python -m training.evaluate --data-dir DIR [--model PATH] [--json OUT]

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


def evaluate_samples(model, samples: list[Sample], flip_tta: bool = True, progress: bool = True) -> dict:
    """Metrics of ``model`` on ``samples`` (see training.metrics.full_report)."""
    from model.inference import Predictor
    from training.metrics import full_report

    predictor = Predictor(model, flip_tta=flip_tta)
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


def evaluate_index(model, index: DataIndex, split: str | None, flip_tta: bool = True, progress: bool = True) -> dict:
    samples = index.samples if split in (None, "all") else index.by_split(split)
    report = evaluate_samples(model, samples, flip_tta=flip_tta, progress=progress)
    report["skipped_unparseable"] = index.unparseable
    report["skipped_unreadable"] = index.unreadable + report.pop("undecodable", 0)
    report["split"] = split or "all"
    return report


def main(argv: list[str] | None = None) -> int:
    from model import settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder of UTKFace-style crops or a Kaggle CSV")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the JSON object to this file")
    p.add_argument("--split", choices=("all", *SPLITS), default="all",
                   help="evaluate only one content-hash split of DIR (default: every image)")
    p.add_argument("--no-tta", action="store_true", help="disable horizontal-flip averaging")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from model.architecture import load_model

    model_file = Path(args.model) if args.model else settings.model_path()
    try:
        index = index_dataset(args.data_dir, dedupe=False)
        model = load_model(model_file)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate_index(model, index, args.split, flip_tta=not args.no_tta, progress=not args.quiet)
    report["model"] = str(model_file)
    text = json.dumps(report)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0 if report.get("n", 0) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
