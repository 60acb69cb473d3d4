"""Export the best checkpoint as the shipped model and write its model card.

The export is a fresh model (no optimizer state, so the file stays small) with the
best checkpoint's weights. Its read-out corrections (unfamiliarity, age prior,
interval widths, temperatures: :mod:`training.calibrate`) are fitted on training and
validation faces and stored beside it, before anything is evaluated, so every figure
on the card is for the answers the app shows. Its test-split metrics, the data
summary, the training history and the preprocessing contract go into the model card.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from model.card import ModelCard, file_sha256
from model.labels import AGE_GROUP_NAMES, ETHNICITIES, GENDERS
from model.settings import UTKFACE_CROP_SIZE

LICENCE_NOTE = (
    "Trained on UTKFace and CelebA, both available for non-commercial research purposes only, and on "
    "photos of East Asian public figures collected by others (no licence stated; research use only). "
    "The model inherits those restrictions."
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


#: Validation faces per source for the framing-jitter study written into the card.
JITTER_FACES = 600


def machine_description() -> str:
    """What trained the model, read off this machine (not assumed)."""
    import os
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    accel = f"{len(gpus)} GPU" if gpus else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {accel}"


def raw_by_source(predictor, arrays) -> dict[str, dict]:
    """The predictor's raw outputs per source of one split (training.train.TrainArrays)."""
    return {name: predictor.raw(arrays.images[arrays.source == code], progress=f"scoring {name}")
            for code, name in enumerate(arrays.names) if (arrays.source == code).any()}


def evaluate_by_source(predictor, arrays, raws: dict[str, dict] | None = None, calibration=None) -> dict[str, dict]:
    """Partial-label metrics per source of one split, from ``raws`` when the outputs are already
    computed; answers read out with ``calibration`` (default: the predictor's)."""
    from training.evaluate import report_outputs

    raws = raws if raws is not None else raw_by_source(predictor, arrays)
    return {name: report_outputs(predictor.outputs(raw, calibration), arrays.labels_of(name), predictor.flip_tta)
            for name, raw in raws.items()}


@dataclass
class Readout:
    """The read-out an exported model serves, and every card figure that depends on it."""

    flip_tta: bool
    calibration: Any  # model.calibration.Calibration
    calibration_section: dict
    validation_metrics: dict  # first source, raw read-out: {"flip_tta": ..., "plain": ...}
    test: dict[str, dict]  # source -> test-split report
    evaluations: dict[str, dict]  # source -> {"val", "test", "test_degraded"}
    framing_jitter: dict[str, dict]
    hidden_hair: dict[str, dict]  # source -> training.robustness.hidden_hair_report on the test split

    @property
    def test_metrics(self) -> dict:
        return next(iter(self.test.values()), {"n": 0})


def fit_and_evaluate_readout(model, arrays: dict, draws: tuple, ethnicity_mix: str = "training") -> Readout:
    """Choose flip averaging on validation, fit the read-out calibration, then score every
    split through the answers the app will show (the test split once, at the end).

    Flip averaging is chosen on the validation split only (age MAE of the first source,
    UTKFace in the shipped recipe). ``draws`` is (draw probability, age-loss weight) per
    training face, as training used them: the calibration divides out the priors they make.
    ``ethnicity_mix``: see :data:`training.calibrate.ETHNICITY_MIXES`.
    """
    from model.inference import Predictor
    from training.calibrate import calibrate_model
    from training.evaluate import degraded_reports
    from training.robustness import hidden_hair_report, jitter_sample, jitter_spread

    names = arrays["val"].names
    # The validation split goes through the network once per flip setting: the raw outputs
    # serve the uncalibrated figures, the calibration fit and the calibrated figures.
    plain, tta = Predictor(model, flip_tta=False), Predictor(model, flip_tta=True)
    raw_plain, raw_tta = raw_by_source(plain, arrays["val"]), raw_by_source(tta, arrays["val"])
    val_plain = evaluate_by_source(plain, arrays["val"], raw_plain)
    val_tta = evaluate_by_source(tta, arrays["val"], raw_tta)
    first = names[0]
    flip_tta = (val_tta[first]["age_mae"] or 0) <= (val_plain[first]["age_mae"] or 0)
    chosen, chosen_raw = (tta, raw_tta) if flip_tta else (plain, raw_plain)
    probabilities, age_weight = draws
    calibration, calibration_section = calibrate_model(chosen, arrays, probabilities, age_weight, val_raw=chosen_raw,
                                                       ethnicity_mix=ethnicity_mix)
    val = evaluate_by_source(chosen, arrays["val"], chosen_raw, calibration)
    predictor = chosen  # what the app serves: the chosen flip setting with the fitted read-out
    predictor.calibration = calibration
    test = evaluate_by_source(predictor, arrays["test"])
    evaluations = {name: {"val": val.get(name), "test": test.get(name)} for name in names}
    first_test = arrays["test"].subset(arrays["test"].source == 0)
    if len(first_test):
        evaluations[first]["test_degraded"] = degraded_reports(predictor, first_test.images, first_test.labels)
    robustness = {}
    for code, name in enumerate(names):
        faces = jitter_sample(arrays["val"].images[arrays["val"].source == code], JITTER_FACES)
        if len(faces):
            robustness[name] = jitter_spread(predictor, faces)
    hair = {}
    for code, name in enumerate(names):
        part = arrays["test"].subset(arrays["test"].source == code)
        if (part.labels["gender"] >= 0).any():
            hair[name] = {**hidden_hair_report(predictor, part.images, part.labels), "split": "test"}
    if first not in test:
        test = {first: {"n": 0}, **test}
    return Readout(flip_tta=flip_tta, calibration=calibration, calibration_section=calibration_section,
                   validation_metrics={"flip_tta": val_tta[first], "plain": val_plain[first]},
                   test=test, evaluations=evaluations, framing_jitter=robustness, hidden_hair=hair)


def recalibrate_exported(model_path: Path, card_path: Path, arrays: dict, draws: tuple,
                         ethnicity_mix: str = "training") -> dict:
    """Refit an exported model's read-out and redo the card figures that depend on it.

    For when the read-out code changes after an export: the model file, its training
    record and the heat-map studies stay as they are; the calibration file, the validation
    and test figures and the framing jitter are redone exactly as the export does them.
    The card must describe the model file (``model_sha256``), so no other model's card is
    rewritten.
    """
    import keras

    from model.calibration import calibration_path
    from model.card import card_to_update

    try:
        card = card_to_update(card_path, model_path)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    model = keras.saving.load_model(model_path, compile=False)
    readout = fit_and_evaluate_readout(model, arrays, draws, ethnicity_mix)
    readout.calibration.save(calibration_path(model_path))
    updated = replace(card, flip_tta=readout.flip_tta, validation_metrics=readout.validation_metrics,
                      calibration=readout.calibration_section, test_metrics=readout.test_metrics,
                      evaluations=readout.evaluations, framing_jitter=readout.framing_jitter,
                      hidden_hair=readout.hidden_hair, model_sha256=card.model_sha256 or file_sha256(model_path))
    updated.write(card_path)
    summary_keys = ("n", "age_mae", "gender_accuracy", "ethnicity_accuracy")
    return {"output": str(model_path), "model_card": str(card_path),
            "test_metrics": {name: {k: r.get(k) for k in summary_keys} for name, r in readout.test.items()}}


def export_model(run_dir: Path, cfg, arrays: dict, summary: dict, train_minutes: float,
                 draws: tuple, weights_from: Path | None = None) -> dict:
    """Save the best checkpoint as ``cfg.output``; fit its read-out and evaluate it per source
    and split (:func:`fit_and_evaluate_readout`); write the card.

    ``weights_from`` exports another model than the run's best checkpoint (a soup of them).
    """
    import keras

    from model.architecture import build_model
    from model.calibration import calibration_path
    from training.soup import read_recipe

    best = keras.saving.load_model(weights_from or run_dir / "best.keras", compile=False)
    model = build_model(cfg.input_size)
    model.set_weights(best.get_weights())
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    readout = fit_and_evaluate_readout(model, arrays, draws, cfg.ethnicity_mix)
    readout.calibration.save(calibration_path(output))
    card = ModelCard(
        name=output.stem,
        created=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        architecture="MobileNetV2 (alpha 1.0, ImageNet init) + heads: age distribution (DLDL, expected value), gender, ethnicity",
        input={
            "size": cfg.input_size,
            "channels": "RGB",
            "dtype": "uint8 values as float, scaled to [-1, 1] inside the model",
            "crop": f"UTKFace aligned & cropped framing ({UTKFACE_CROP_SIZE}x{UTKFACE_CROP_SIZE}), resized by model.preprocess.prepare_face",
        },
        labels={"gender": list(GENDERS), "ethnicity": list(ETHNICITIES), "age_groups": list(AGE_GROUP_NAMES)},
        flip_tta=readout.flip_tta,
        weights=str(weights_from) if weights_from else "best checkpoint by validation loss",
        model_sha256=file_sha256(output),
        data=summary,
        splits=summary["splits"],
        validation_metrics=readout.validation_metrics,
        calibration=readout.calibration_section,
        test_metrics=readout.test_metrics,
        evaluations=readout.evaluations,
        framing_jitter=readout.framing_jitter,
        hidden_hair=readout.hidden_hair,
        training={
            "minutes": round(train_minutes, 1),
            "machine": machine_description(),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("verbose",)},
            "history": read_history(run_dir / "history.csv"),
            **({"soup": recipe} if weights_from and (recipe := read_recipe(weights_from)) else {}),
        },
        licence=LICENCE_NOTE,
    )
    card_path = card.write(Path(cfg.model_card) if cfg.model_card else output.parent / "model_card.json")
    summary_keys = ("n", "age_mae", "gender_accuracy", "ethnicity_accuracy")
    return {"output": str(output), "model_card": str(card_path),
            "test_metrics": {name: {k: r.get(k) for k in summary_keys} for name, r in readout.test.items()}}
