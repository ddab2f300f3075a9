"""`keras-dp train` with test hooks, for the job's fault-tolerance tests.

Usage: job_worker.py [--chdir BASE] [--signal STEP NAME WORKER ATTEMPT]...
                     -- TRAIN_ARGS...

Runs `keras-dp train TRAIN_ARGS...` (the real command) with one callback
added to the job's own (`keras_dp.train.build_callbacks`): after each
training step it prints `STEP <global step>`; each `--signal 5 SIGKILL 1 0`
makes worker 1 send itself SIGKILL after global step 5 in launch attempt 0
(`KERAS_DP_RESTART_COUNT`, 0 when unset); when training ends it prints
`FILES <json>`, the files under its working directory. With `--chdir BASE`,
worker i works in BASE/w<i>, so a relative --output-dir shows which worker
wrote what.
"""

import argparse
import json
import os
import signal
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--chdir", default=None)
parser.add_argument("--signal", nargs=4, action="append", default=[],
                    metavar=("STEP", "NAME", "WORKER", "ATTEMPT"))
parser.add_argument("train_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"]) \
    if "TF_CONFIG" in os.environ else int(os.environ.get("KERAS_DP_TASK_INDEX", "0"))
if args.chdir:
    folder = os.path.join(args.chdir, f"w{index}")
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)

from keras_dp import train as train_module  # noqa: E402
from keras_dp.cli import main  # noqa: E402

build_callbacks = train_module.build_callbacks


def files():
    return sorted(os.path.relpath(os.path.join(root, name), ".")
                  for root, dirs, names in os.walk(".") for name in names)


def with_hook(*a, **kw):
    import keras

    from keras_dp.callbacks import is_replayed_step

    callbacks = build_callbacks(*a, **kw)
    stop = callbacks["stop"]
    attempt = os.environ.get("KERAS_DP_RESTART_COUNT", "0")
    signals = {int(step): name for step, name, worker, when in args.signal
               if int(worker) == index and when == attempt}

    class Hook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if is_replayed_step(self.model, batch):
                return
            print(f"STEP {stop.step}", flush=True)
            if stop.step in signals:
                os.kill(os.getpid(), getattr(signal, signals[stop.step]))

        def on_train_end(self, logs=None):
            print(f"FILES {json.dumps(files())}", flush=True)

    callbacks["hook"] = Hook()
    return callbacks


train_module.build_callbacks = with_hook
sys.exit(main(["train", *train_args]))
