"""Train the three-head model on a UTKFace folder or Kaggle CSV.

    python -m training.train --data-dir ../shared/data/utkface/UTKFace \
        --imagenet-weights ../shared/data/weights/mobilenet_v2_1.0_imagenet_notop.weights.h5

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.architecture import DEFAULT_FINE_TUNE_FROM


@dataclass
class TrainConfig:
    data_dir: str
    imagenet_weights: str | None = None
    output: str | None = None
    model_card: str | None = None
    run_dir: str = "runs/latest"
    input_size: int = 128
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
    verbose: int = 1


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    from model import settings

    defaults = TrainConfig(data_dir="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="UTKFace folder or Kaggle-style CSV file")
    p.add_argument("--imagenet-weights", default=None,
                   help="local MobileNetV2 no-top .weights.h5 (default: IMAGENET_WEIGHTS or ../shared; "
                        "'download' lets Keras fetch them)")
    p.add_argument("--output", default=None, help="where to export the final model (.keras)")
    p.add_argument("--model-card", default=None, help="where to write the model card JSON")
    p.add_argument("--run-dir", default=defaults.run_dir, help="checkpoints, CSV log, summaries")
    for name in ("input_size", "batch_size", "head_epochs", "epochs", "patience", "seed", "verbose"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("head_lr", "lr", "min_lr", "warmup_epochs", "weight_decay", "age_loss_weight",
                 "label_smoothing", "class_weight_power", "aug_zoom_min", "aug_zoom_max", "aug_rotation_deg"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    p.add_argument("--fine-tune-from", default=defaults.fine_tune_from, help="first backbone layer to unfreeze")
    p.add_argument("--schedule", choices=("cosine", "plateau"), default=defaults.schedule)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=defaults.optimizer,
                   help="SGD with Nesterov momentum (default) or AdamW")
    p.add_argument("--freeze-batchnorm", action="store_true", help="keep BatchNorm frozen while fine-tuning")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.keras")
    p.add_argument("--limit", type=int, default=None, help="use at most N samples (smoke runs)")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: FACELENS_CACHE or ~/.cache/facelens)")
    args = p.parse_args(argv)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items()})
    if cfg.imagenet_weights is None:
        found = settings.imagenet_weights_path()
        cfg.imagenet_weights = str(found) if found else None
    if cfg.cache_dir is None:
        cfg.cache_dir = str(settings.cache_dir())
    return cfg


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise SystemExit("--strategy multiworker needs TF_CONFIG describing the cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def inverse_frequency_weights(codes: np.ndarray, classes: int, power: float) -> np.ndarray:
    """Per-class weights ~ frequency^-power, normalised to mean 1 over the samples."""
    counts = np.bincount(codes, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    weights /= (weights[codes]).mean()
    return weights


def sample_weights(ages: np.ndarray, genders: np.ndarray, ethnicities: np.ndarray, power: float) -> dict[str, np.ndarray]:
    """Per-sample weights per head: rare ethnicities, genders and 5-year age bins count more."""
    age_bins = np.minimum(ages // 5, 20)
    age_w = inverse_frequency_weights(age_bins, 21, power)[age_bins]
    return {
        "age": np.clip(age_w, 0.25, 4.0).astype(np.float32),
        "gender": inverse_frequency_weights(genders, 2, power)[genders].astype(np.float32),
        "ethnicity": inverse_frequency_weights(ethnicities, 5, power)[ethnicities].astype(np.float32),
    }


def make_dataset(images, ages, genders, ethnicities, weights, cfg: TrainConfig, training: bool):
    """tf.data pipeline from cached uint8 faces.

    Per-head sample weights are folded into the soft targets: categorical
    cross-entropy with target w * q equals w times the loss with target q, and the
    argmax (accuracy) is unchanged. That gives each head its own imbalance weights
    without per-output sample_weight plumbing.
    """
    import tensorflow as tf

    from model.labels import NUM_AGE_BINS
    from training.augment import AugmentConfig, augment_batch

    images_t = tf.constant(images)
    ages_t = tf.constant(ages.astype(np.float32))
    genders_t = tf.constant(genders.astype(np.int32))
    eth_t = tf.constant(ethnicities.astype(np.int32))
    w = {k: tf.constant(v) for k, v in weights.items()}
    bins = tf.range(NUM_AGE_BINS, dtype=tf.float32)
    smooth = cfg.label_smoothing
    aug = AugmentConfig(max_rotation_deg=cfg.aug_rotation_deg, zoom_range=(cfg.aug_zoom_min, cfg.aug_zoom_max))

    def targets(idx):
        age = tf.gather(ages_t, idx)
        # Label distribution: a Gaussian around the label, wider for older faces
        # whose labels are noisier.
        sigma = 1.0 + 0.04 * age
        dist = tf.exp(-tf.square(bins[None, :] - age[:, None]) / (2.0 * tf.square(sigma[:, None])))
        dist = dist / tf.reduce_sum(dist, axis=1, keepdims=True)

        def onehot(codes, classes):
            return tf.one_hot(codes, classes) * (1.0 - smooth) + smooth / classes

        return {
            "age": age[:, None],
            "age_dist": dist * tf.gather(w["age"], idx)[:, None],
            "gender": onehot(tf.gather(genders_t, idx), 2) * tf.gather(w["gender"], idx)[:, None],
            "ethnicity": onehot(tf.gather(eth_t, idx), 5) * tf.gather(w["ethnicity"], idx)[:, None],
        }

    def load(idx):
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        if training:
            x = augment_batch(x, aug)
        return x, targets(idx)

    ds = tf.data.Dataset.range(len(images))
    if training:
        ds = ds.shuffle(len(images), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=training)
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


def weighted_soft_crossentropy(y_true, y_pred):
    """Cross-entropy for targets pre-multiplied by a per-sample weight w.

    The weight is the target's sum; the loss is w * CE(target / w, prediction).
    Passing unnormalised targets straight to Keras' cross-entropy is wrong under
    TensorFlow: its fused softmax kernel back-propagates ``softmax - target``,
    which is the gradient only for targets that sum to 1, and training diverges
    (measured: a frozen-feature head's loss went 1.5 -> 44,000 in 8 epochs).
    """
    from keras import losses, ops

    weight = ops.maximum(ops.sum(y_true, axis=-1), 1e-8)
    return weight * losses.categorical_crossentropy(y_true / weight[:, None], y_pred)


def compile_model(model, lr: float, cfg: TrainConfig) -> None:
    import keras

    model.compile(
        optimizer=make_optimizer(cfg.optimizer, lr, cfg.weight_decay),
        loss={
            "age": keras.losses.MeanAbsoluteError(),
            "age_dist": weighted_soft_crossentropy,
            "gender": weighted_soft_crossentropy,
            "ethnicity": weighted_soft_crossentropy,
        },
        loss_weights={"age": cfg.age_loss_weight, "age_dist": 1.0, "gender": 1.0, "ethnicity": 1.0},
        metrics={
            "age": [keras.metrics.MeanAbsoluteError(name="mae")],
            "gender": [keras.metrics.CategoricalAccuracy(name="acc")],
            "ethnicity": [keras.metrics.CategoricalAccuracy(name="acc")],
        },
    )


def _callbacks(cfg: TrainConfig, run_dir: Path, steps_per_epoch: int, phase: str, started: float):
    import keras

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
            (run_dir / "state.json").write_text(json.dumps({"phase": phase, "epochs_done": epoch + 1}))

    callbacks = [
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


def load_split_arrays(samples, cfg: TrainConfig, desc: str):
    from training.cache import cached_images

    cache = Path(cfg.cache_dir) if cfg.cache_dir else None
    images, ok = cached_images(samples, cfg.input_size, cache, desc=desc)
    kept = [s for s, good in zip(samples, ok) if good]
    ages = np.array([s.age for s in kept], np.int64)
    genders = np.array([s.gender for s in kept], np.int64)
    eth = np.array([s.ethnicity for s in kept], np.int64)
    return images[ok], ages, genders, eth, int((~ok).sum())


def run(cfg: TrainConfig) -> dict:
    import keras

    from model.architecture import build_model, freeze_backbone, unfreeze_backbone
    from training.data import index_dataset
    from training.summary import summarize

    started = time.time()
    keras.utils.set_random_seed(cfg.seed)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    print(f"indexing {cfg.data_dir} ...", flush=True)
    index = index_dataset(cfg.data_dir)
    if cfg.limit:
        index.samples = index.samples[: cfg.limit]
    summary = summarize(index)
    (run_dir / "dataset_summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"kept": summary["n"], "splits": summary["splits"], "quality": summary["quality"]}), flush=True)

    train = load_split_arrays(index.by_split("train"), cfg, "decode train")
    val = load_split_arrays(index.by_split("val"), cfg, "decode val")
    if len(train[0]) == 0 or len(val[0]) == 0:
        raise SystemExit("need at least one decodable training and validation image")
    weights = sample_weights(train[1], train[2], train[3], cfg.class_weight_power)
    ones = {k: np.ones(len(val[1]), np.float32) for k in weights}
    train_ds = make_dataset(*train[:4], weights, cfg, training=True)
    val_ds = make_dataset(*val[:4], ones, cfg, training=False)
    steps = len(train[0]) // cfg.batch_size
    if steps == 0:
        raise SystemExit(f"fewer training images ({len(train[0])}) than one batch ({cfg.batch_size})")

    strategy = make_strategy(cfg.strategy)
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if cfg.resume and state_file.is_file() else None
    with strategy.scope():
        if state is not None:
            print(f"resuming from {run_dir / 'last.keras'} ({state})", flush=True)
            model = keras.saving.load_model(
                run_dir / "last.keras", custom_objects={"weighted_soft_crossentropy": weighted_soft_crossentropy})
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

    fit_kwargs = dict(validation_data=val_ds, verbose=cfg.verbose)
    if state is None or state["phase"] == "heads":
        done = state["epochs_done"] if state else 0
        if done < cfg.head_epochs:
            with strategy.scope():
                freeze_backbone(model)
                compile_model(model, cfg.head_lr, cfg)
            print(f"phase 1: heads on a frozen backbone, {cfg.head_epochs} epochs", flush=True)
            model.fit(train_ds, epochs=cfg.head_epochs, initial_epoch=done,
                      callbacks=_callbacks(cfg, run_dir, steps, "heads", started), **fit_kwargs)
        state = {"phase": "fine_tune", "epochs_done": 0}
        with strategy.scope():
            trainable = unfreeze_backbone(model, cfg.fine_tune_from, train_batchnorm=not cfg.freeze_batchnorm)
            compile_model(model, cfg.min_lr, cfg)
        print(f"phase 2: fine-tuning {trainable} backbone layers from {cfg.fine_tune_from}", flush=True)
    done = state["epochs_done"]
    budget_left = cfg.time_budget_min is None or (time.time() - started) / 60 < cfg.time_budget_min
    if done < cfg.epochs and budget_left:
        model.fit(train_ds, epochs=cfg.epochs, initial_epoch=done,
                  callbacks=_callbacks(cfg, run_dir, steps, "fine_tune", started), **fit_kwargs)
    train_minutes = (time.time() - started) / 60

    result = {"config": asdict(cfg), "train_minutes": round(train_minutes, 2), "summary": summary}
    if cfg.output:
        from training.export import export_model

        result.update(export_model(run_dir, cfg, index, summary, train_minutes))
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = run(cfg)
    print(json.dumps({k: v for k, v in result.items() if k in ("train_minutes", "test_metrics", "output")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
