"""`keras-dp train` with one injected fault, for the soak and the resize check.

Usage: python benchmarks/fault_worker.py [--fault WORKER ATTEMPT MOMENT SIGNAL]
                                         -- TRAIN_ARGS...

Runs the real `keras-dp train TRAIN_ARGS...` (keras_dp.cli.main) and adds
one observer callback to the job's own (`keras_dp.train.build_callbacks`):
after every training step it prints `STEP <global step> <unix time>`. With
`--fault 1 0 step:5 SIGKILL`, worker 1 sends SIGNAL to itself at MOMENT in
launch attempt 0 (`KERAS_DP_RESTART_COUNT`, 0 when unset), after printing
`FAULT <moment> <signal> <unix time>`. MOMENT is one of:

- `start:SECONDS`: that long after the process started (start-up: imports,
  cluster formation, data, model build; or the first steps if it is late);
- `step:K`: right after global step K (the end of the last step: `step:N`);
- `mid:K:MS`: MS milliseconds after step K ended, i.e. inside step K + 1;
- `backup:K`: inside the backup of step K, after the checkpoint's data is
  written and before its metadata and `latest` pointer are;
- `validation:K`: at the first validation batch after step K.

The signal comes from a thread of the worker itself, so it lands exactly at
the moment named, on the whole process (SIGSTOP freezes it, as a stopped VM
or a debugger would).
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--fault", nargs=4, default=None,
                    metavar=("WORKER", "ATTEMPT", "MOMENT", "SIGNAL"))
parser.add_argument("train_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"]) \
    if "TF_CONFIG" in os.environ else 0
attempt = os.environ.get("KERAS_DP_RESTART_COUNT", "0")
fault = None
if args.fault and int(args.fault[0]) == index and args.fault[1] == attempt:
    kind, _, rest = args.fault[2].partition(":")
    fault = {"kind": kind, "args": [float(x) for x in rest.split(":") if x],
             "signal": getattr(signal, args.fault[3]), "moment": args.fault[2]}


def inject(delay: float = 0.0) -> None:
    """Sends the fault's signal to this process (after `delay` seconds, from a thread)."""
    global fault
    spec, fault = fault, None
    if spec is None:
        return

    def fire():
        if delay:
            time.sleep(delay)
        print(f"FAULT {spec['moment']} {spec['signal'].name} {time.time():.3f}", flush=True)
        os.kill(os.getpid(), spec["signal"])

    if delay:
        threading.Thread(target=fire, daemon=True).start()
    else:
        fire()


if fault and fault["kind"] == "start":
    inject(fault["args"][0])

from keras_dp import train as train_module  # noqa: E402
from keras_dp.callbacks import _backup_store  # noqa: E402
from keras_dp.cli import main  # noqa: E402

build_callbacks = train_module.build_callbacks
step_now = [0]

if fault and fault["kind"] == "backup":
    save = _backup_store.BackupStore.save

    def save_with_fault(self, step, write_state, meta):
        def write(prefix):
            result = write_state(prefix)
            if fault and int(step) == int(fault["args"][0]):
                inject()
            return result
        return save(self, step, write, meta)

    _backup_store.BackupStore.save = save_with_fault


def with_observer(*a, **kw):
    import keras

    from keras_dp.callbacks import is_replayed_step

    callbacks = build_callbacks(*a, **kw)
    stop = callbacks["stop"]

    class Observer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if is_replayed_step(self.model, batch):
                return
            step_now[0] = stop.step
            print(f"STEP {stop.step} {time.time():.3f}", flush=True)
            if fault and fault["args"] and int(fault["args"][0]) == stop.step:
                if fault["kind"] == "step":
                    inject()
                elif fault["kind"] == "mid":
                    inject(fault["args"][1] / 1000.0)

        def on_test_batch_begin(self, batch, logs=None):
            if fault and fault["kind"] == "validation" and \
                    step_now[0] >= int(fault["args"][0]):
                inject()

    # After the job's own callbacks: STEP K is printed once the backup of step K
    # (when one is due) is written.
    callbacks["observer"] = Observer()
    return callbacks


train_module.build_callbacks = with_observer
sys.exit(main(["train", *train_args]))
