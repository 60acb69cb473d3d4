"""Export the best checkpoint as the shipped model and write its model card.

The export is a fresh model (no optimizer state, so the file stays small) with the
best checkpoint's weights. Its test-split metrics, the data summary, the training
history and the preprocessing contract go into the model card the app reads.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS
from model.settings import UTKFACE_CROP_SIZE

LICENCE_NOTE = (
    "Trained on UTKFace, which is available for non-commercial research purposes only. "
    "The model inherits that restriction."
)


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for i, row in enumerate(rows):
        entry = {"step": i + 1}
        for key, value in row.items():
            try:
                entry[key] = round(float(value), 6)
            except (TypeError, ValueError):
                entry[key] = value
        out.append(entry)
    return out


def export_model(run_dir: Path, cfg, index, summary: dict, train_minutes: float) -> dict:
    import keras

    from model.architecture import build_model
    from training.evaluate import evaluate_samples

    best = keras.saving.load_model(run_dir / "best.keras", compile=False)
    model = build_model(cfg.input_size)
    model.set_weights(best.get_weights())
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)

    val_plain = evaluate_samples(model, index.by_split("val"), flip_tta=False)
    val_tta = evaluate_samples(model, index.by_split("val"), flip_tta=True)
    # Choose test-time flip averaging on validation, never on the test split.
    flip_tta = val_tta["age_mae"] <= val_plain["age_mae"]
    test = evaluate_samples(model, index.by_split("test"), flip_tta=flip_tta)
    card = {
        "name": output.stem,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "architecture": "MobileNetV2 (alpha 1.0, ImageNet init) + heads: age distribution (DLDL, expected value), gender, ethnicity",
        "input": {
            "size": cfg.input_size,
            "channels": "RGB",
            "dtype": "uint8 values as float, scaled to [-1, 1] inside the model",
            "crop": f"UTKFace aligned & cropped framing ({UTKFACE_CROP_SIZE}x{UTKFACE_CROP_SIZE}), resized by model.preprocess.prepare_face",
        },
        "labels": {"gender": list(GENDERS), "ethnicity": list(ETHNICITIES), "age_groups": list(AGE_GROUP_NAMES)},
        "flip_tta": flip_tta,
        "data": summary,
        "splits": summary["splits"],
        "validation_metrics": {"flip_tta": val_tta, "plain": val_plain},
        "test_metrics": test,
        "training": {
            "minutes": round(train_minutes, 1),
            "machine": "2 CPU cores, no GPU",
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("verbose",)},
            "history": read_history(run_dir / "history.csv"),
        },
        "licence": LICENCE_NOTE,
    }
    card_path = Path(cfg.model_card) if cfg.model_card else output.parent / "model_card.json"
    card_path.write_text(json.dumps(card, indent=2))
    return {"output": str(output), "model_card": str(card_path), "test_metrics": {
        k: test[k] for k in ("n", "age_mae", "gender_accuracy", "ethnicity_accuracy", "age_within_5_years")}}
