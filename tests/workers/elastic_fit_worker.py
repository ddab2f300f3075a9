"""A user's `model.fit` with `keras_dp.data` and `keras_dp.callbacks.BackupAndRestore`.

Usage: elastic_fit_worker.py OUT_DIR [--kill-at STEP --kill-worker I]

Trains a small TransformerLM on the builtin corpus for 2 epochs of 4 steps at
a FIXED global batch of 8 (whatever the number of workers and replicas:
that is what makes a run resizable), with `BackupAndRestore(OUT_DIR/backup,
save_freq=3)` replaying the data position (its default). On the first launch
(`KERAS_DP_RESTART_COUNT` 0 or unset) worker `--kill-worker` SIGKILLs itself
after global step `--kill-at`. The chief writes OUT_DIR/weights.npz and
prints `RESULT <json>` (workers, replicas, losses).
"""

import argparse
import json
import os
import signal
import sys

import numpy as np

import keras_dp

GLOBAL_BATCH, SEQ_LEN, EPOCHS, STEPS = 8, 32, 2, 4

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--kill-at", type=int, default=None)
parser.add_argument("--kill-worker", type=int, default=0)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

with keras_dp.scope() as ctx:
    import keras

    keras.utils.set_random_seed(0)
    model = keras_dp.models.TransformerLM(vocab_size=256, seq_len=SEQ_LEN, d_model=32,
                                          num_layers=1, num_heads=2)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    model.build((None, SEQ_LEN))
train = keras_dp.data.text_dataset("builtin", seq_len=SEQ_LEN, global_batch_size=GLOBAL_BATCH)
first_launch = os.environ.get("KERAS_DP_RESTART_COUNT", "0") == "0"


class KillAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        backup = self.model._keras_dp_backup
        if keras_dp.callbacks.is_replayed_step(self.model, batch):
            return
        print(f"STEP {backup.global_step}", flush=True)
        if first_launch and backup.global_step == args.kill_at and \
                (ctx.worker_index or 0) == args.kill_worker:
            os.kill(os.getpid(), signal.SIGKILL)


history = model.fit(train, epochs=EPOCHS, steps_per_epoch=STEPS, verbose=0, callbacks=[
    keras_dp.callbacks.BackupAndRestore(os.path.join(args.out, "backup"), save_freq=3),
    KillAt()])
if ctx.is_chief:
    np.savez(os.path.join(args.out, "weights.npz"), *model.get_weights())
    print("RESULT " + json.dumps({"workers": ctx.num_workers, "replicas": ctx.num_replicas,
                                  "loss": [float(x) for x in history.history["loss"]]}),
          flush=True)
sys.stdout.flush()
