"""A worker of the fault-tolerance tests: fit a small model with the keras_dp callbacks.

Usage: resume_worker.py OUT_DIR [--repeat] [--save-freq N|epoch] [--sleep S]
                        [--kill-at STEP --kill-worker I --kill-signal NAME]
                        [--startup-timeout S] [--backup DIR] [--keep-backup]
                        [--per-worker-cwd]

Trains `_problem`'s model for EPOCHS epochs of STEPS_PER_EPOCH steps with
`keras_dp.callbacks.BackupAndRestore(--backup, default OUT_DIR/backup)`,
`ModelCheckpoint`, `TensorBoard` and `CSVLogger` on relative paths, under OUT_DIR
(with --per-worker-cwd, worker i works in OUT_DIR/cwd<i>, so that whatever a
worker writes to "the user's paths" lands in its own tree).
The data of every step is fixed (`_problem.data`), per epoch or as an
infinite dataset (`--repeat`). Prints `STEP <global step> <time>` after each
step. On the first launch (`KERAS_DP_RESTART_COUNT=0`) worker `--kill-worker`
sends itself `--kill-signal` after global step `--kill-at`. The chief writes
OUT_DIR/weights.npz and OUT_DIR/result.json (last step time) at the end.
"""

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

import keras_dp
import _problem

EPOCHS = 3
STEPS_PER_EPOCH = 6

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--repeat", action="store_true")
parser.add_argument("--save-freq", default="2")
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--kill-at", type=int, default=None)
parser.add_argument("--kill-worker", type=int, default=1)
parser.add_argument("--kill-signal", default="SIGKILL")
parser.add_argument("--startup-timeout", type=float, default=120.0)
parser.add_argument("--backup", default=None)
parser.add_argument("--keep-backup", action="store_true")
parser.add_argument("--per-worker-cwd", action="store_true")
args = parser.parse_args()
args.out = os.path.abspath(args.out)
os.makedirs(args.out, exist_ok=True)
os.chdir(args.out)
if args.per_worker_cwd:
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    os.makedirs(f"cwd{index}", exist_ok=True)
    os.chdir(f"cwd{index}")


def dataset(strategy):
    import tensorflow as tf

    x, y = _problem.data(STEPS_PER_EPOCH, _problem.GLOBAL_BATCH)
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(_problem.GLOBAL_BATCH)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica)
        ds = ds.shard(replicas, ctx.input_pipeline_id)  # one worker = one replica here
        return ds.repeat() if args.repeat else ds

    return strategy.distribute_datasets_from_function(dataset_fn)


import tensorflow  # noqa: E402,F401 - imported first, so STARTING times the cluster start-up only

print(f"STARTING {time.time():.3f}", flush=True)
with keras_dp.scope(startup_timeout=args.startup_timeout) as ctx:
    model = _problem.build_model()

import keras  # noqa: E402 - after the strategy, as TensorFlow requires


class Steps(keras.callbacks.Callback):
    """Prints each global step; sleeps; kills itself once where asked."""

    def __init__(self, backup):
        super().__init__()
        self.backup = backup
        self.last = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.backup.global_step
        self.last = time.time()
        print(f"STEP {step} {self.last:.3f}", flush=True)
        if (args.kill_at is not None and step == args.kill_at
                and ctx.worker_index == args.kill_worker
                and os.environ.get("KERAS_DP_RESTART_COUNT", "0") == "0"):
            os.kill(os.getpid(), getattr(signal, args.kill_signal))
        if args.sleep:
            time.sleep(args.sleep)


save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
backup = keras_dp.callbacks.BackupAndRestore(args.backup or os.path.join(args.out, "backup"),
                                             save_freq=save_freq,
                                             delete_checkpoint=not args.keep_backup)
steps = Steps(backup)
callbacks = [backup, steps,
             keras_dp.callbacks.ModelCheckpoint("user/ckpt/model.weights.h5",
                                                save_weights_only=True),
             keras_dp.callbacks.TensorBoard("user/tb"),
             keras_dp.callbacks.CSVLogger("user/log.csv")]
fit_args = dict(epochs=EPOCHS, verbose=0, callbacks=callbacks)
if args.repeat:
    fit_args["steps_per_epoch"] = STEPS_PER_EPOCH
model.fit(dataset(ctx.strategy), **fit_args)
if ctx.is_chief:
    np.savez(os.path.join(args.out, "weights.npz"), *model.get_weights())
    with open(os.path.join(args.out, "result.json"), "w") as handle:
        json.dump({"last_step": steps.last, "global_step": backup.global_step}, handle)
print(f"DONE worker {ctx.worker_index} {time.time():.3f}", flush=True)
