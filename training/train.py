"""Train the three-head model on one UTKFace folder, or on several labelled sources at once.

    python -m training.train --data-dir ../shared/data/utkface/UTKFace \
        --imagenet-weights ../shared/data/weights/mobilenet_v2_1.0_imagenet_notop.weights.h5

    # several sources with partial labels (aligned once by python -m training.prepare):
    python -m training.train --prepared-dir runs/prepared \
        --source utkface=../shared/data/utkface/UTKFace --source celeba=../shared/data/celeba,weight=0.6

With ``--source``, every face comes from ``training.prepare``'s cache (the app's own
detector and aligner); each head's loss is masked where its label is missing, an
age range trains the age distribution's mass into the range, and each source's
images are drawn with its ``weight`` (sampling with replacement, ``--epoch-size``
draws per epoch). ``--init-model`` starts from a trained model instead of ImageNet.

Phase 1 trains the heads on a frozen ImageNet backbone; phase 2 fine-tunes the
upper backbone with a warm-up (a high learning rate at the start would wreck the
pretrained features) and cosine decay, or ReduceLROnPlateau with ``--schedule
plateau``. Every epoch writes ``last.keras`` (resume with ``--resume``), the best
one by validation loss ``best.keras``, and a CSV log. At the end the best weights
are exported without optimizer state, evaluated on the test split, and the model
card is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from model.architecture import DEFAULT_FINE_TUNE_FROM
from model.labels import AGE_WEIGHT_BIN_YEARS, ETHNICITIES, GENDERS, NUM_AGE_WEIGHT_BINS
from model.settings import INPUT_SIZE


@dataclass
class TrainConfig:
    data_dir: str | None = None
    sources: list[str] = field(default_factory=list)
    prepared_dir: str = "runs/prepared"
    init_model: str | None = None
    export_from: str | None = None
    recalibrate: str | None = None
    ethnicity_mix: str = "training"  # training.calibrate.ETHNICITY_MIXES
    epoch_size: int | None = None
    augment: str = "real_photos"
    age_weight_power: float = 0.7
    consistency: float = 0.0
    consistency_views: str = "all"  # "framing": a pair shares light, colour, occlusion and degradation
    distill_from: str | None = None  # teacher model: augmented views learn its answer on the plain crop
    distill_weight: float = 0.5
    imagenet_weights: str | None = None
    output: str | None = None
    model_card: str | None = None
    run_dir: str = "runs/latest"
    input_size: int = INPUT_SIZE
    batch_size: int = 64
    head_epochs: int = 2
    epochs: int = 16
    optimizer: str = "sgd"
    head_lr: float = 1e-2
    lr: float = 5e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    fine_tune_from: str = DEFAULT_FINE_TUNE_FROM
    schedule: str = "cosine"
    freeze_batchnorm: bool = False
    patience: int = 6
    time_budget_min: float | None = None
    strategy: str = "default"
    scale_lr: bool = False
    resume: bool = False
    limit: int | None = None
    cache_dir: str | None = None
    seed: int = 1234
    age_loss_weight: float = 0.1
    label_smoothing: float = 0.05
    class_weight_power: float = 0.5
    # Augmentation: zoom > 1 magnifies (tighter crop), < 1 shows more context. A wide
    # range makes the model forgiving of the few-percent framing jitter that landmark
    # alignment of a real photo adds. The shipped model used these values; 0.9-1.12 and
    # 12 deg gave validation MAE 4.85 against 4.82.
    aug_zoom_min: float = 0.82
    aug_zoom_max: float = 1.2
    aug_rotation_deg: float = 15.0
    # Share of faces whose hair (the crop's sides and top) is hidden under a flat colour
    # (training.augment._hide_hair); 0 keeps the shipped recipe.
    hair_occlusion: float = 0.0
    # Hide the hair only of faces at least this old (exact age, or a range's lower end);
    # faces without an age label count as adults. 0 hides it at every age. On UTKFace
    # validation, hiding it at every age cost the 0-19s 1-2 points of gender accuracy.
    hair_occlusion_min_age: float = 0.0
    verbose: int = 1


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    from model import settings
    from training.calibrate import ETHNICITY_MIXES

    defaults = TrainConfig(data_dir="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="UTKFace folder or Kaggle-style CSV file (one source)")
    p.add_argument("--source", dest="sources", action="append", default=[],
                   help="name=path[,weight=W][,group=age][,split=a/b/c] (repeatable; faces from --prepared-dir)")
    p.add_argument("--prepared-dir", default=defaults.prepared_dir, help="training.prepare's output folder")
    p.add_argument("--init-model", default=None,
                   help="start from this trained .keras model (skips the head phase unless --head-epochs > 0)")
    p.add_argument("--export-from", default=None,
                   help="train nothing: export this model (e.g. a training.soup of checkpoints) with a full "
                        "model card, evaluated on the same sources and splits")
    p.add_argument("--recalibrate", default=None, metavar="MODEL",
                   help="refit the read-out calibration of an exported MODEL (the file stays) and redo the "
                        "figures of its card (--model-card, default model_card.json beside it) that depend on it; "
                        "give the sources and weights it was trained with")
    p.add_argument("--ethnicity-mix", choices=ETHNICITY_MIXES, default=defaults.ethnicity_mix,
                   help="read-out of the exported model: 'training' answers as the training data is mixed; "
                        "'between' divides out the part of that mix that does best on mean accuracy and "
                        "balanced accuracy on validation (see training.calibrate)")
    p.add_argument("--epoch-size", type=int, default=None, help="training draws per epoch (default: training images)")
    p.add_argument("--augment", choices=("basic", "real_photos"), default=defaults.augment,
                   help="real_photos adds low resolution, blur, JPEG, colour casts, hard light, occlusion")
    p.add_argument("--imagenet-weights", default=None,
                   help="local MobileNetV2 no-top .weights.h5 (default: IMAGENET_WEIGHTS or ../shared; "
                        "'download' lets Keras fetch them)")
    p.add_argument("--output", default=None, help="where to export the final model (.keras)")
    p.add_argument("--model-card", default=None, help="where to write the model card JSON")
    p.add_argument("--run-dir", default=defaults.run_dir, help="checkpoints, CSV log, summaries")
    for name in ("input_size", "batch_size", "head_epochs", "epochs", "patience", "seed", "verbose"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("head_lr", "lr", "min_lr", "warmup_epochs", "weight_decay", "age_loss_weight",
                 "label_smoothing", "class_weight_power", "age_weight_power", "consistency", "distill_weight",
                 "aug_zoom_min", "aug_zoom_max", "aug_rotation_deg", "hair_occlusion", "hair_occlusion_min_age"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    p.add_argument("--consistency-views", choices=("all", "framing"), default=defaults.consistency_views,
                   help="with --consistency: the two views of a face differ in every augmentation (all), or "
                        "only in framing (flip, rotation, zoom, shift), sharing light, colour and degradation")
    p.add_argument("--distill-from", default=None,
                   help="teacher .keras model: each augmented training face also learns the teacher's flip-averaged "
                        "answer on its plain crop (weight --distill-weight; unlabelled heads learn it alone)")
    p.add_argument("--fine-tune-from", default=defaults.fine_tune_from, help="first backbone layer to unfreeze")
    p.add_argument("--schedule", choices=("cosine", "plateau"), default=defaults.schedule)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=defaults.optimizer,
                   help="SGD with Nesterov momentum (default) or AdamW")
    p.add_argument("--freeze-batchnorm", action="store_true", help="keep BatchNorm frozen while fine-tuning")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is then global")
    p.add_argument("--scale-lr", action="store_true",
                   help="scale --lr and --head-lr linearly with --batch-size (they are given for batch 64)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.keras")
    p.add_argument("--limit", type=int, default=None, help="use at most N samples (smoke runs)")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: FACELENS_CACHE or ~/.cache/facelens)")
    args = p.parse_args(argv)
    if not args.data_dir and not args.sources:
        p.error("give --data-dir or at least one --source")
    cfg = TrainConfig(**{k: v for k, v in vars(args).items()})
    if cfg.scale_lr:
        from training.distribute import scaled_learning_rate

        cfg.lr, cfg.head_lr = (scaled_learning_rate(lr, cfg.batch_size) for lr in (cfg.lr, cfg.head_lr))
    if cfg.imagenet_weights is None:
        found = settings.imagenet_weights_path()
        cfg.imagenet_weights = str(found) if found else None
    if cfg.cache_dir is None:
        cfg.cache_dir = str(settings.cache_dir())
    return cfg


def make_strategy(name: str):
    """Call before any other TensorFlow op: MultiWorkerMirroredStrategy configures the
    collective runtime, which cannot change once TensorFlow has started."""
    import tensorflow as tf

    if name == "mirrored":
        from training.distribute import local_devices

        return tf.distribute.MirroredStrategy(local_devices())
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise SystemExit("--strategy multiworker needs TF_CONFIG describing the cluster")
        from training.distribute import multi_worker_strategy

        return multi_worker_strategy()
    return tf.distribute.get_strategy()


def inverse_frequency_weights(codes: np.ndarray, classes: int, power: float) -> np.ndarray:
    """Per-class weights ~ frequency^-power, normalised to mean 1 over the labelled
    samples (codes < 0 mean 'no label' and are not counted)."""
    codes = np.asarray(codes)
    labelled = codes[codes >= 0]
    counts = np.bincount(labelled, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    if len(labelled):
        weights /= weights[labelled].mean()
    return weights


def _per_sample(weights: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.where(codes >= 0, weights[np.maximum(codes, 0)], 0.0)


def sample_weights(labels: dict[str, np.ndarray], power: float, age_power: float | None = None) -> dict[str, np.ndarray]:
    """Per-sample weights per head: rare ethnicities, genders and 5-year age bins count
    more. A range label counts in the bin of its middle; unlabelled samples get 0."""
    age_power = power if age_power is None else age_power
    has_age = labels["age_low"] >= 0
    middle = np.where(labels["age"] >= 0, labels["age"], (labels["age_low"] + labels["age_high"]) // 2)
    age_bins = np.where(has_age, np.minimum(middle // AGE_WEIGHT_BIN_YEARS, NUM_AGE_WEIGHT_BINS - 1), -1)
    age_w = _per_sample(inverse_frequency_weights(age_bins, NUM_AGE_WEIGHT_BINS, age_power), age_bins)
    return {
        "age": np.where(has_age, np.clip(age_w, 0.25, 4.0), 0.0).astype(np.float32),
        "gender": _per_sample(inverse_frequency_weights(labels["gender"], len(GENDERS), power),
                              labels["gender"]).astype(np.float32),
        "ethnicity": _per_sample(inverse_frequency_weights(labels["ethnicity"], len(ETHNICITIES), power),
                                 labels["ethnicity"]).astype(np.float32),
    }


@dataclass
class TrainArrays:
    """Faces of one split with partial labels (-1 = missing) and their source."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: dict[str, np.ndarray]  # age, age_low, age_high, gender, ethnicity: (N,) int32
    source: np.ndarray  # (N,) int32 index into ``names``
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def labels_of(self, name: str) -> dict[str, np.ndarray]:
        """The labels of one source's faces."""
        mask = self.source == self.names.index(name)
        return {k: v[mask] for k, v in self.labels.items()}

    def subset(self, mask: np.ndarray) -> TrainArrays:
        return TrainArrays(self.images[mask], {k: v[mask] for k, v in self.labels.items()}, self.source[mask],
                           self.names)


def sampling_probabilities(source: np.ndarray, source_weights: list[float]) -> np.ndarray:
    """Draw probability per image: its source's weight (1 = as often as any other image)."""
    p = np.asarray(source_weights, np.float64)[source]
    return p / p.sum()


def hair_allowed_mask(age, age_low, min_age: float):
    """(N,) bool: faces old enough to have their hair hidden (exact age, else a range's
    lower end; -1 = unknown). A face with no age label counts as an adult: the folders
    without ages here (CelebA) hold adults."""
    import tensorflow as tf

    age, age_low = tf.convert_to_tensor(age), tf.convert_to_tensor(age_low)
    known = tf.where(age >= 0, age, age_low)
    return (known < 0) | (tf.cast(known, tf.float32) >= min_age)


def make_dataset(arrays: TrainArrays, weights: dict[str, np.ndarray], cfg: TrainConfig, training: bool,
                 probabilities: np.ndarray | None = None, seed: int = 0, input_context=None,
                 teacher: dict[str, np.ndarray] | None = None):
    """tf.data pipeline from cached uint8 faces.

    Training draws ``epoch_size`` images per epoch with ``probabilities`` (with
    replacement: per-source weights); validation walks every image once. With
    ``cfg.consistency > 0`` every face appears twice in adjacent rows (training: two
    independent augmentations, or with ``consistency_views="framing"`` two framings of one
    look; validation: the same face twice, so the consistency
    term is exactly zero there and validation loss stays comparable). Per-head
    sample weights are folded into the targets (see :mod:`training.losses`): categorical
    cross-entropy with target w * q equals w times the loss with target q, and the
    argmax is unchanged, so each head has its own imbalance weights and an
    unlabelled head (w = 0) contributes nothing.

    Under a strategy, ``input_context`` (tf.distribute.InputContext) makes the training
    stream this worker's shard of each global batch (:func:`training.distribute.index_stream`).

    ``teacher`` (rows aligned with ``arrays``; :func:`training.distill.teacher_outputs`)
    blends the teacher's answer on the plain crop into every probability target with
    weight ``cfg.distill_weight`` (:func:`training.distill.blend`); age ranges keep their
    own target.
    """
    import tensorflow as tf

    from model.labels import NUM_AGE_BINS
    from training.augment import AugmentConfig, augment_batch
    from training.distill import blend
    from training.distribute import index_stream

    images_t = tf.constant(arrays.images)
    lab = {k: tf.constant(v.astype(np.int32)) for k, v in arrays.labels.items()}
    w = {k: tf.constant(v.astype(np.float32)) for k, v in weights.items()}
    bins = tf.range(NUM_AGE_BINS, dtype=tf.float32)
    smooth = cfg.label_smoothing
    taught = None if teacher is None else {k: tf.constant(v.astype(np.float32)) for k, v in teacher.items()}
    beta = float(cfg.distill_weight)
    zoom = (cfg.aug_zoom_min, cfg.aug_zoom_max)
    aug = (AugmentConfig.real_photos(cfg.aug_rotation_deg, zoom) if cfg.augment == "real_photos"
           else AugmentConfig(max_rotation_deg=cfg.aug_rotation_deg, zoom_range=zoom))
    aug = replace(aug, hair_occlusion_probability=cfg.hair_occlusion)

    def targets(idx):
        age = tf.cast(tf.gather(lab["age"], idx), tf.float32)
        low = tf.cast(tf.gather(lab["age_low"], idx), tf.float32)
        high = tf.cast(tf.gather(lab["age_high"], idx), tf.float32)
        age_w = tf.gather(w["age"], idx)[:, None]
        exact = age >= 0
        ranged = tf.logical_and(~exact, low >= 0)
        # Exact age: a Gaussian around the label, wider for older faces whose labels are noisier.
        a = tf.maximum(age, 0.0)
        sigma = 1.0 + 0.04 * a
        dist = tf.exp(-tf.square(bins[None, :] - a[:, None]) / (2.0 * tf.square(sigma[:, None])))
        dist = dist / tf.reduce_sum(dist, axis=1, keepdims=True)
        # Range: negative mass spread over the range's bins (age_distribution_loss reads the sign).
        inside = tf.cast((bins[None, :] >= low[:, None]) & (bins[None, :] <= high[:, None]), tf.float32)
        inside = inside / tf.maximum(tf.reduce_sum(inside, axis=1, keepdims=True), 1.0)
        age_dist = tf.where(exact[:, None], dist * age_w, tf.where(ranged[:, None], -inside * age_w, 0.0))

        if taught is not None:
            labelled_dist = blend(age_dist, tf.gather(taught["age_dist"], idx), tf.cast(exact, tf.float32), beta)
            age_dist = tf.where(ranged[:, None], age_dist, labelled_dist)

        def onehot(name, classes):
            codes = tf.gather(lab[name], idx)
            valid = tf.cast(codes >= 0, tf.float32)[:, None]
            q = tf.one_hot(tf.maximum(codes, 0), classes) * (1.0 - smooth) + smooth / classes
            q = q * valid * tf.gather(w[name], idx)[:, None]
            if taught is None:
                return q
            return blend(q, tf.gather(taught[name], idx), valid, beta)

        return {
            "age": tf.where(exact, age, -1.0)[:, None],
            "age_dist": age_dist,
            "gender": onehot("gender", 2),
            "ethnicity": onehot("ethnicity", 5),
        }

    def hair_allowed(idx):
        return hair_allowed_mask(tf.gather(lab["age"], idx), tf.gather(lab["age_low"], idx),
                                 cfg.hair_occlusion_min_age)

    paired = cfg.consistency > 0
    if paired and cfg.batch_size % 2:
        raise ValueError(f"--consistency needs an even --batch-size, got {cfg.batch_size}")
    per_batch = cfg.batch_size // 2 if paired else cfg.batch_size

    def load(idx):
        if paired:
            idx = tf.repeat(idx, 2)
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        if training:
            x = augment_batch(x, aug, shared_looks=paired and cfg.consistency_views == "framing",
                              hair_allowed=hair_allowed(idx) if cfg.hair_occlusion_min_age > 0 else None)
        return x, targets(idx)

    if training:
        # An endless stream, read with steps_per_epoch, so that Keras keeps ONE iterator
        # for the whole run. A fresh iterator per epoch restarts tf.data's random ops
        # from the same seed: every epoch would draw the same images with the same
        # augmentations, and the model memorises them (measured: train age MAE 2.6 vs
        # validation 5.4 after 6 epochs).
        if probabilities is None:
            probabilities = np.full(len(arrays), 1.0 / len(arrays))
        ds = index_stream(probabilities, per_batch, seed, input_context)
    else:
        ds = tf.data.Dataset.range(len(arrays)).batch(per_batch)
        # A strategy splits each validation batch over the workers by data (no files to shard by).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_optimizer(name: str, lr: float, weight_decay: float):
    """SGD with Nesterov momentum by default (the classic fine-tuning choice, stable
    with BatchNorm training); AdamW on request. Both clip the global gradient norm."""
    import keras

    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay, global_clipnorm=5.0)
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay,
                                global_clipnorm=5.0)


def compile_model(model, lr: float, cfg: TrainConfig) -> None:
    from training.losses import (
        MaskedAccuracy,
        MaskedMAE,
        PairConsistentLoss,
        age_distribution_loss,
        masked_mae,
        weighted_soft_crossentropy,
    )

    if cfg.consistency > 0:  # batches hold two views of each face (make_dataset)
        age_dist_loss = PairConsistentLoss("age_distribution_loss", cfg.consistency)
        class_loss = PairConsistentLoss("weighted_soft_crossentropy", cfg.consistency)
    else:
        age_dist_loss, class_loss = age_distribution_loss, weighted_soft_crossentropy
    model.compile(
        optimizer=make_optimizer(cfg.optimizer, lr, cfg.weight_decay),
        loss={
            "age": masked_mae,
            "age_dist": age_dist_loss,
            "gender": class_loss,
            "ethnicity": class_loss,
        },
        loss_weights={"age": cfg.age_loss_weight, "age_dist": 1.0, "gender": 1.0, "ethnicity": 1.0},
        metrics={
            "age": [MaskedMAE(name="mae")],
            "gender": [MaskedAccuracy(name="acc")],
            "ethnicity": [MaskedAccuracy(name="acc")],
        },
    )


def _callbacks(cfg: TrainConfig, run_dir: Path, steps_per_epoch: int, phase: str, started: float,
               prior_minutes: float = 0.0):
    import keras

    from training.distribute import backup_dir, phase_backup

    class WarmupCosine(keras.callbacks.Callback):
        """Per-step learning rate: linear warm-up then cosine decay to min_lr."""

        def on_train_batch_begin(self, batch, logs=None):
            step = self._epoch * steps_per_epoch + batch
            warm = max(1.0, cfg.warmup_epochs * steps_per_epoch)
            total = max(1, cfg.epochs * steps_per_epoch)
            if step < warm:
                lr = cfg.min_lr + (cfg.lr - cfg.min_lr) * step / warm
            else:
                progress = min(1.0, (step - warm) / max(1.0, total - warm))
                lr = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
            self.model.optimizer.learning_rate.assign(lr)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    class TimeBudget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if cfg.time_budget_min and (time.time() - started) / 60 > cfg.time_budget_min:
                print(f"\ntime budget of {cfg.time_budget_min} min reached after epoch {epoch + 1}", flush=True)
                self.model.stop_training = True

    class SaveState(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.save(run_dir / "last.keras")
            minutes = prior_minutes + (time.time() - started) / 60
            (run_dir / "state.json").write_text(
                json.dumps({"phase": phase, "epochs_done": epoch + 1, "minutes": round(minutes, 2)}))

    callbacks = [
        *([phase_backup(backup_dir(Path(cfg.run_dir)) / phase)] if cfg.strategy != "default" else []),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True),
        SaveState(),
        TimeBudget(),
    ]
    if phase == "fine_tune":
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=False))
        if cfg.schedule == "cosine":
            callbacks.append(WarmupCosine())
        else:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=2, min_lr=cfg.min_lr))
    return callbacks


def arrays_from_samples(samples, cfg: TrainConfig, desc: str) -> TrainArrays:
    """UTKFace-style samples (every label known) -> decoded, cached arrays."""
    from training.cache import cached_images

    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    images, ok = cached_images(samples, cfg.input_size, cache, desc=desc)
    kept = [s for s, good in zip(samples, ok) if good]
    ages = np.array([s.age for s in kept], np.int32)
    labels = {"age": ages, "age_low": ages.copy(), "age_high": ages.copy(),
              "gender": np.array([s.gender for s in kept], np.int32),
              "ethnicity": np.array([s.ethnicity for s in kept], np.int32)}
    return TrainArrays(images[ok], labels, np.zeros(len(kept), np.int32), ("data",))


def arrays_from_prepared(specs, cfg: TrainConfig) -> tuple[dict[str, TrainArrays], dict]:
    """Per split, every source's aligned faces (from training.prepare) stacked together."""
    from training.prepare import load_prepared
    from training.sources import describe, label_arrays, source_kind

    names = tuple(spec.name for spec in specs)
    parts: dict[str, list] = {split: [] for split in ("train", "val", "test")}
    summary: dict = {"sources": {}}
    for code, spec in enumerate(specs):
        records, faces = load_prepared(spec, Path(cfg.prepared_dir), cfg.input_size)
        if cfg.limit:
            records, faces = records[: cfg.limit], faces[: cfg.limit]
        summary["sources"][spec.name] = {**describe(records), "weight": spec.weight, "path": spec.path}
        splits = np.array([r.split for r in records])
        whole = TrainArrays(faces, label_arrays(records), np.full(len(records), code, np.int32), names)
        for split in parts:
            parts[split].append(whole.subset(splits == split))
    out = {}
    for split, items in parts.items():
        out[split] = TrainArrays(
            np.concatenate([a.images for a in items]),
            {k: np.concatenate([a.labels[k] for a in items]) for k in items[0].labels},
            np.concatenate([a.source for a in items]), names)
    # The data summary the Dataset explorer draws is UTKFace's (the one source with every
    # label); the other sources are listed with their label counts.
    utkface = [spec for spec in specs if source_kind(spec.path) == "utkface"]
    if utkface:
        from training.data import index_dataset
        from training.summary import summarize

        summary = {**summarize(index_dataset(utkface[0].path)), "sources": summary["sources"]}
    summary["splits"] = {split: len(a) for split, a in out.items()}
    summary.setdefault("n", sum(v["n"] for v in summary["sources"].values()))
    return out, summary


def run(cfg: TrainConfig) -> dict:
    """Train (and export) in the run folder; under a strategy, the chief writes the run's
    files and every other worker a temporary folder that is removed afterwards."""
    from training import distribute

    if cfg.strategy == "multiworker" and (cfg.resume or cfg.time_budget_min):
        # --resume would read the chief's files on every worker, and a time budget could
        # stop the workers at different epochs (the rest would wait for them forever).
        raise SystemExit("--strategy multiworker resumes by itself (BackupAndRestore); "
                         "drop --resume and --time-budget-min")
    strategy = make_strategy(cfg.strategy)
    with distribute.writable_run_dir(Path(cfg.run_dir), cfg.strategy) as run_dir:
        return _train(cfg, strategy, run_dir)


def _train(cfg: TrainConfig, strategy, run_dir: Path) -> dict:
    import keras

    from model.architecture import build_model, freeze_backbone, unfreeze_backbone
    from training import distribute
    from training.losses import CUSTOM_OBJECTS
    from training.prepare import SourceSpec

    started = time.time()
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if cfg.resume and state_file.is_file() else None
    # Under a strategy, a restarted run restores every phase's backup (distribute.phase_backup).
    backed_up = distribute.backed_up_epochs(Path(cfg.run_dir)) if cfg.strategy != "default" else {}
    if backed_up:
        print(f"restarting from the backup: epochs done per phase {backed_up}", flush=True)
    # A resumed run continues with other draws and augmentations than the first session's.
    seed = cfg.seed + 1009 * (state["epochs_done"] if state else sum(backed_up.values()))
    keras.utils.set_random_seed(seed)

    specs = [SourceSpec.parse(text) for text in cfg.sources]
    if specs:
        print(f"loading prepared faces of {[s.name for s in specs]} from {cfg.prepared_dir} ...", flush=True)
        arrays, summary = arrays_from_prepared(specs, cfg)
    else:
        from training.data import index_dataset
        from training.summary import summarize

        print(f"indexing {cfg.data_dir} ...", flush=True)
        index = index_dataset(cfg.data_dir)
        if cfg.limit:
            index.samples = index.samples[: cfg.limit]
        summary = summarize(index)
        arrays = {split: arrays_from_samples(index.by_split(split), cfg, f"decode {split}")
                  for split in ("train", "val", "test")}
    (run_dir / "dataset_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"n": summary["n"], "splits": summary["splits"]}), flush=True)
    train, val = arrays["train"], arrays["val"]
    if len(train) == 0 or len(val) == 0:
        raise SystemExit("need at least one decodable training and validation image")
    weights = sample_weights(train.labels, cfg.class_weight_power, cfg.age_weight_power)
    ones = {k: (val.labels[k if k != "age" else "age_low"] >= 0).astype(np.float32) for k in weights}
    probabilities = sampling_probabilities(train.source, [s.weight for s in specs] or [1.0])
    # Nothing to train: export or recalibrate before any teacher or input pipeline is built.
    if cfg.recalibrate:
        from training.export import recalibrate_exported

        model_path = Path(cfg.recalibrate)
        card_path = Path(cfg.model_card) if cfg.model_card else model_path.parent / "model_card.json"
        return {"config": asdict(cfg), "summary": summary,
                **recalibrate_exported(model_path, card_path, arrays, (probabilities, weights["age"]),
                                       cfg.ethnicity_mix)}
    if cfg.export_from:
        if not cfg.output:
            raise SystemExit("--export-from needs --output")
        from training.export import export_model

        done = json.loads(state_file.read_text()) if state_file.is_file() else {}
        minutes = float(done.get("minutes", 0.0))  # the run's own training time
        return {"config": asdict(cfg), "train_minutes": minutes, "summary": summary,
                **export_model(run_dir, cfg, arrays, summary, minutes, (probabilities, weights["age"]),
                               weights_from=Path(cfg.export_from))}

    teacher = None
    if cfg.distill_from:
        from training.distill import teacher_outputs

        print(f"teacher: {cfg.distill_from} on {len(train)} training faces", flush=True)
        teacher = teacher_outputs(cfg.distill_from, train.images, run_dir)
    if cfg.strategy == "default":
        train_ds = make_dataset(train, weights, cfg, training=True, probabilities=probabilities, seed=seed,
                                teacher=teacher)
    else:
        def shard(context):
            # Every worker draws the same global batches (index_stream) and augments its own slice
            # with its own random stream.
            import tensorflow as tf

            tf.random.set_seed(seed + 7919 * context.input_pipeline_id)
            return make_dataset(train, weights, cfg, training=True, probabilities=probabilities, seed=seed,
                                input_context=context, teacher=teacher)

        train_ds = strategy.distribute_datasets_from_function(shard)
    val_ds = make_dataset(val, ones, cfg, training=False)
    steps = (cfg.epoch_size or len(train)) // cfg.batch_size
    if steps == 0:
        raise SystemExit(f"fewer training images ({len(train)}) than one batch ({cfg.batch_size})")
    if cfg.strategy != "default" and len(val) < cfg.batch_size:
        # Keras 3 averages the first validation batch over the replicas; a partial one splits unevenly and fails.
        raise SystemExit(f"under a strategy, give at least one global batch ({cfg.batch_size}) of validation images")

    with strategy.scope():
        if state is not None:
            print(f"resuming from {run_dir / 'last.keras'} ({state})", flush=True)
            model = keras.saving.load_model(run_dir / "last.keras", custom_objects=CUSTOM_OBJECTS)
        elif cfg.init_model:
            print(f"starting from {cfg.init_model}", flush=True)
            model = build_model(cfg.input_size)
            model.set_weights(keras.saving.load_model(cfg.init_model, compile=False).get_weights())
        else:
            model = build_model(cfg.input_size, cfg.imagenet_weights if cfg.imagenet_weights != "download" else None)
            if cfg.imagenet_weights == "download":
                # Only when asked: Keras fetches ImageNet weights over the network.
                reference = keras.applications.MobileNetV2(
                    input_shape=(cfg.input_size, cfg.input_size, 3), include_top=False, weights="imagenet")
                for layer in reference.layers:
                    if layer.weights:
                        model.get_layer(layer.name).set_weights(layer.get_weights())
            elif cfg.imagenet_weights is None:
                print("warning: no ImageNet weights given; training the backbone from scratch", file=sys.stderr)

    if cfg.strategy != "default":
        distribute.synchronize_batchnorm(model)
    fit_kwargs = dict(validation_data=val_ds, verbose=cfg.verbose, steps_per_epoch=steps)
    earlier = state or (json.loads(state_file.read_text()) if backed_up and state_file.is_file() else {})
    prior = float(earlier.get("minutes", 0.0))  # training time of earlier sessions
    if state is None and cfg.init_model and cfg.head_epochs == 0:
        state = {"phase": "heads", "epochs_done": 0}
    if state is None or state["phase"] == "heads":
        done = state["epochs_done"] if state else 0
        if done < cfg.head_epochs:
            with strategy.scope():
                freeze_backbone(model)
                compile_model(model, cfg.head_lr, cfg)
            print(f"phase 1: heads on a frozen backbone, {cfg.head_epochs} epochs", flush=True)
            model.fit(train_ds, epochs=cfg.head_epochs, initial_epoch=done,
                      callbacks=_callbacks(cfg, run_dir, steps, "heads", started, prior), **fit_kwargs)
        state = {"phase": "fine_tune", "epochs_done": 0}
        with strategy.scope():
            trainable = unfreeze_backbone(model, cfg.fine_tune_from, train_batchnorm=not cfg.freeze_batchnorm)
            compile_model(model, cfg.min_lr, cfg)
        print(f"phase 2: fine-tuning {trainable} backbone layers from {cfg.fine_tune_from}", flush=True)
    done = state["epochs_done"]
    budget_left = cfg.time_budget_min is None or (time.time() - started) / 60 < cfg.time_budget_min
    if done < cfg.epochs and budget_left:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=done,
                  callbacks=_callbacks(cfg, run_dir, steps, "fine_tune", started, prior), **fit_kwargs)
    train_minutes = prior + (time.time() - started) / 60

    if cfg.strategy != "default":
        distribute.remove_backup(Path(cfg.run_dir))
    result = {"config": asdict(cfg), "train_minutes": round(train_minutes, 2), "summary": summary}
    if cfg.output and distribute.is_chief(cfg.strategy):
        from training.export import export_model

        result.update(export_model(run_dir, cfg, arrays, summary, train_minutes, (probabilities, weights["age"])))
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = run(cfg)
    print(json.dumps({k: v for k, v in result.items() if k in ("train_minutes", "test_metrics", "output")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
