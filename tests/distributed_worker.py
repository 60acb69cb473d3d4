"""One training process for the tf.distribute tests: ``python -m training.train`` plus a record.

    python tests/distributed_worker.py --record R.json [--logical-cpus 2] [--exit-after fine_tune:1] -- TRAIN ARGS

It runs ``training.train.main`` unchanged and writes to ``R.json`` what the tests check:
the training indices each of this process's input pipelines yielded, the epochs each phase
began, a digest of every weight at the end of each phase (and which ones differ between this
process's replica copies), and the number of replicas.
``--exit-after PHASE:N`` kills the process (``os._exit``, nothing cleaned up) once epoch N of
that phase has ended, as a crashed worker would. One thread per TensorFlow pool: the tests
share two cores with other work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, when run as a script

EXIT_CODE = 75


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--logical-cpus", type=int, default=1)
    parser.add_argument("--exit-after", default=None, help="PHASE:EPOCHS, e.g. fine_tune:1")
    args, train_args = parser.parse_known_args()
    train_args = [a for a in train_args if a != "--"]

    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    from training import distribute, train

    record: dict = {"task": list(distribute.task()), "streams": [], "epochs": [], "weights": {}}
    path = Path(args.record)

    def save():
        path.write_text(json.dumps(record))

    stream = distribute.index_stream

    def recording_stream(probabilities, global_batch, seed, input_context=None):
        entry = {"probabilities": np.asarray(probabilities).tolist(), "global_batch": global_batch, "seed": seed,
                 "pipeline": input_context.input_pipeline_id if input_context else 0,
                 "pipelines": input_context.num_input_pipelines if input_context else 1, "batches": []}
        record["streams"].append(entry)

        def note(idx):
            entry["batches"].append(idx.numpy().tolist())
            return idx

        def noted(idx):
            out = tf.py_function(note, [idx], tf.int32)
            out.set_shape(idx.shape)
            return out

        return stream(probabilities, global_batch, seed, input_context).map(noted)

    distribute.index_stream = recording_stream
    exit_phase, exit_epochs = (args.exit_after.split(":") if args.exit_after else (None, 0))

    class Recorder(keras.callbacks.Callback):
        def __init__(self, phase):
            super().__init__()
            self.phase = phase

        def on_epoch_begin(self, epoch, logs=None):
            record["epochs"].append([self.phase, epoch])
            record["replicas"] = self.model.distribute_strategy.num_replicas_in_sync

        def on_epoch_end(self, epoch, logs=None):
            if self.phase == exit_phase and epoch + 1 == int(exit_epochs):
                save()
                os._exit(EXIT_CODE)

        def on_train_end(self, logs=None):
            record["weights"][self.phase] = {
                weight.path: hashlib.sha256(np.ascontiguousarray(weight.numpy()).tobytes()).hexdigest()[:16]
                for weight in self.model.weights}
            record["local_copies"] = len(getattr(self.model.weights[0].value, "values", [None]))
            # This process's replica copies of each variable (a MirroredVariable holds one per device).
            record.setdefault("unequal_local_copies", {})[self.phase] = [
                weight.path for weight in self.model.weights
                if len({np.asarray(copy).tobytes() for copy in getattr(weight.value, "values", [weight.value])}) > 1]

    callbacks = train._callbacks

    def with_recorder(cfg, run_dir, steps_per_epoch, phase, *rest):
        return [*callbacks(cfg, run_dir, steps_per_epoch, phase, *rest), Recorder(phase)]

    train._callbacks = with_recorder
    try:
        return train.main(train_args)
    finally:
        save()


if __name__ == "__main__":
    raise SystemExit(main())
