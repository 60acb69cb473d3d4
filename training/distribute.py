"""Training under tf.distribute: which worker this is, where it may write, the training
stream sharded by data over workers, and the backup a restarted worker resumes from.

``python -m training.train --strategy mirrored`` mirrors the model over this machine's
GPUs (or its logical CPU devices); ``--strategy multiworker`` over every worker that
``TF_CONFIG`` lists. ``--batch-size`` is the global batch: each step draws that many
faces once, and each worker trains on its own slice of the draw.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: The batch size the recipe's learning rates were tuned at; ``--scale-lr`` scales them
#: linearly with the global batch (Goyal et al. 2017), keeping the recipe's warm-up.
REFERENCE_BATCH = 64


def scaled_learning_rate(lr: float, global_batch: int) -> float:
    return lr * global_batch / REFERENCE_BATCH


def task() -> tuple[str, int]:
    """This process's (task type, index) from ``TF_CONFIG``; ("worker", 0) without one."""
    spec = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    return spec.get("type", "worker"), int(spec.get("index", 0))


def is_chief(strategy: str = "multiworker") -> bool:
    """The chief writes the run's files: task "chief", or worker 0 when no chief is listed.
    Without ``multiworker`` the one process is the chief, whatever ``TF_CONFIG`` says."""
    if strategy != "multiworker":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    kind, index = task()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


@contextmanager
def writable_run_dir(run_dir: Path, strategy: str = "multiworker") -> Iterator[Path]:
    """The run folder on the chief; on any other worker a temporary folder removed afterwards.

    Every worker still makes the same saves in the same order (saving a model under
    MultiWorkerMirroredStrategy reads synced variables, a collective op every worker must
    join), but only the chief's files are kept, so workers never write over each other.
    """
    if is_chief(strategy):
        run_dir.mkdir(parents=True, exist_ok=True)
        yield run_dir
        return
    kind, index = task()
    scratch = Path(tempfile.mkdtemp(prefix=f"facelens-{kind}{index}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def backup_dir(run_dir: Path) -> Path:
    """This worker's fault-tolerance backup (``run_dir/backup/<task>-<index>``).

    The replicas hold identical weights, so each worker backs up its own copy and restores
    from it: no shared file system is needed, and the folders never collide on one host.
    """
    kind, index = task()
    return run_dir / "backup" / f"{kind}-{index}"


def backed_up_epochs(run_dir: Path) -> dict[str, int]:
    """Epochs done per phase in this worker's backup ({} when there is none)."""
    done = {}
    for meta in sorted(backup_dir(run_dir).glob("*/training_metadata.json")):
        done[meta.parent.name] = int(json.loads(meta.read_text())["epoch"])
    return done


def remove_backup(run_dir: Path) -> None:
    """Drop this worker's backup once the whole run (both phases) has finished."""
    shutil.rmtree(backup_dir(run_dir), ignore_errors=True)
    parent = backup_dir(run_dir).parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def phase_backup(path: Path):
    """keras.callbacks.BackupAndRestore for one training phase, kept after the phase ends.

    A restarted run replays the phases: a finished phase's backup restores its end state
    and trains no epoch, an interrupted one continues from its last finished epoch.
    Keras' callback also leaves its restored epoch on the model (``model._initial_epoch``),
    which would make the next ``fit`` on the same model skip as many epochs; it is cleared
    when the phase ends.
    """
    import keras

    class PhaseBackup(keras.callbacks.BackupAndRestore):
        def on_train_end(self, logs=None):
            super().on_train_end(logs)
            self.model._initial_epoch = None

    return PhaseBackup(str(path), save_freq="epoch", delete_checkpoint=False)


def local_devices() -> list[str] | None:
    """Devices MirroredStrategy mirrors over: every logical GPU, else every logical CPU
    device (one unless split with tf.config.set_logical_device_configuration)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return None  # MirroredStrategy's default: all GPUs
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def multi_worker_strategy():
    """tf.distribute.MultiWorkerMirroredStrategy with the ``reduce`` Keras 3's ``fit`` expects.

    With more than one worker, Keras 3 (3.15) ``fit`` fails twice in ``strategy.reduce``
    (keras-team/keras#20585): it reduces the first (images, targets) batch in one call, but
    TensorFlow's reduce takes a single value ("Attempt to convert a value (PerReplica...) to
    a Tensor"); and every step it averages the per-replica scalar losses and metrics along
    ``axis=0``, which a scalar does not have. This reduce takes a nest, leaf by leaf, and
    averages a scalar over the replicas (``axis=None``).
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            one = super().reduce

            def leaf(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return one(reduce_op, v, None if rank == 0 else axis)

            return tf.nest.map_structure(leaf, value)

    return MultiWorkerMirroredStrategy()


def synchronize_batchnorm(model) -> int:
    """Make every BatchNormalization layer compute its batch statistics over the global batch.

    Under a strategy each replica otherwise normalises with its own slice's statistics and
    updates its own moving mean and variance: Keras 3 does not average them over replicas,
    so the workers end with different models (measured here: 85 BatchNormalization
    statistics differed between two workers after one epoch) and the chief saves only its
    own. Synchronised, training matches one device with the global batch. Returns the
    number of layers changed.
    """
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def index_stream(probabilities: np.ndarray, global_batch: int, seed: int, input_context=None):
    """Endless batches of training indices drawn with ``probabilities`` (with replacement).

    Step ``k`` draws ``global_batch`` indices from a stateless generator seeded by
    ``(seed, k)``, so every worker computes the same draw without talking to the others
    and keeps only its own slice: sharding by data. (A stream generated in Python or by
    random ops has no files to shard by, and tf.data's automatic DATA sharding would make
    every worker load and augment the whole global batch to keep a part of it.) With an
    ``input_context`` the stream yields this pipeline's per-replica batches, one per local
    replica and step, in replica order.
    """
    import tensorflow as tf

    logits = tf.constant(np.log(np.maximum(probabilities, 1e-30))[None, :], tf.float32)

    def draw(step):
        seeds = tf.stack([tf.constant(seed, tf.int64), step])
        return tf.random.stateless_categorical(logits, global_batch, seeds, dtype=tf.int32)[0]

    ds = tf.data.Dataset.counter().map(draw)
    if input_context is None:
        return ds
    pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
    per_replica = input_context.get_per_replica_batch_size(global_batch)
    local = global_batch // pipelines
    if local * pipelines != global_batch:
        raise ValueError(f"global batch {global_batch} does not split evenly over {pipelines} workers")
    ds = ds.map(lambda idx: tf.reshape(idx[pipeline * local:(pipeline + 1) * local], (-1, per_replica)))
    return ds.unbatch()
