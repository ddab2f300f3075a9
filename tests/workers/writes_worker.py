"""A worker of the 2-process drop-in writes test: the program a user already has, unchanged.

Usage: writes_worker.py OUT_DIR
Every worker runs all of it, on shared paths under OUT_DIR/shared, as the guides write it:
fit with the stock `keras.callbacks` ModelCheckpoint, BackupAndRestore, TensorBoard (if the
tensorboard package is there), CSVLogger and ReduceLROnPlateau, interrupted at epoch 2; a
second fit that resumes from the backup, with EarlyStopping; then `model.save`,
`save_weights`, `keras.saving.save_model` (imported before the strategy exists),
`keras.models.save_model` to `.h5`, `export`, the TF tutorial's `write_filepath` save, and a
load right after the save.

Writes OUT_DIR/record_<worker>.json (what the worker saw) and OUT_DIR/writes_<worker>.txt:
every file under OUT_DIR/shared this process opened for writing (h5py, Python's `open`) or
renamed, one line each, written before the operation (so a crash leaves it).
"""

import json
import os
import sys
import zlib

import h5py

out = sys.argv[1]
index = int(os.environ["KERAS_DP_TASK_INDEX"])
shared = os.path.join(out, "shared")
_log = open(os.path.join(out, f"writes_{index}.txt"), "w", buffering=1)


def _record(kind, path):
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(shared):
        _log.write(f"{kind} {os.fspath(path)}\n")


def _audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (set(mode) & set("wax+")) if isinstance(mode, str) else (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if writing:
            _record("open", path)
    elif event == "os.rename":
        _record("rename", args[1])


sys.addaudithook(_audit)
_h5_init = h5py.File.__init__


def _h5_file(self, name, mode="r", *args, **kwargs):
    if mode != "r":
        _record("h5py", name)
    _h5_init(self, name, mode, *args, **kwargs)


h5py.File.__init__ = _h5_file

import keras  # noqa: E402
from keras.saving import save_model  # noqa: E402 - bound before keras_dp patches anything

import _problem  # noqa: E402
import keras_dp  # noqa: E402

try:
    import tensorboard  # noqa: F401
    HAVE_TENSORBOARD = True
except ImportError:
    HAVE_TENSORBOARD = False


def crc(weights):
    value = 0
    for w in weights:
        value = zlib.crc32(keras.ops.convert_to_numpy(w).tobytes(), value)
    return f"{value:08x}"


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch_crc, self.lr, self.begin_crc = {}, [], None

    def on_train_begin(self, logs=None):
        self.begin_crc = crc(self.model.get_weights())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_crc[epoch] = crc(self.model.get_weights())
        self.lr.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


def write_filepath(filepath, task_type, task_id):
    """The TF multi-worker tutorial's helper: a non-chief writes into a directory of its own."""
    dirpath, base = os.path.dirname(filepath), os.path.basename(filepath)
    if task_id != 0:
        dirpath = os.path.join(dirpath, "workertemp_" + str(task_id))
    os.makedirs(dirpath, exist_ok=True)
    return os.path.join(dirpath, base)


with keras_dp.scope() as ctx:
    model = _problem.build_model()
assert ctx.num_workers == 2, ctx
os.makedirs(shared, exist_ok=True)
backup = keras.callbacks.BackupAndRestore(backup_dir=os.path.join(shared, "backup"))
checkpoint = keras.callbacks.ModelCheckpoint(
    filepath=os.path.join(shared, "ckpt", "ckpt-{epoch}.keras"), save_freq="epoch")
reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                              min_delta=10.0, verbose=0)
common = [backup, checkpoint, reduce_lr, keras.callbacks.CSVLogger(
    os.path.join(shared, "log.csv"))]
if HAVE_TENSORBOARD:
    common.append(keras.callbacks.TensorBoard(log_dir=os.path.join(shared, "tb")))
data = _problem.distributed_dataset(ctx.strategy)

first = Record()
try:
    model.fit(data, epochs=6, steps_per_epoch=_problem.STEPS, verbose=0,
              callbacks=common + [first, Interrupt()])
except RuntimeError as exc:
    assert "interrupted" in str(exc), exc
model.set_weights(_problem.initial_weights())   # the restore must bring epoch 2's weights back
second = Record()
stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=10.0)
# A new CSVLogger: Keras 3.10's, used for a second fit, keeps writing through the first
# fit's file object after reopening the file (Keras 3.15 resets it in on_train_begin).
again = [keras.callbacks.CSVLogger(os.path.join(shared, "log.csv")) if
         isinstance(c, keras.callbacks.CSVLogger) else c for c in common]
history = model.fit(data, epochs=6, steps_per_epoch=_problem.STEPS, verbose=0,
                    callbacks=again + [stop, second])

final = os.path.join(shared, "final.keras")
model.save(final)
loaded = keras.saving.load_model(final)          # right after the save, on every worker
model.save_weights(os.path.join(shared, "final.weights.h5"))
save_model(model, os.path.join(shared, "alias.keras"))
keras.models.save_model(model, os.path.join(shared, "legacy.h5"))
model.export(os.path.join(shared, "exported"), verbose=False)
tutorial = write_filepath(os.path.join(shared, "tutorial", "model.keras"), "worker", index)
model.save(tutorial)
if index != 0:
    keras_dp_tutorial_dir = os.path.dirname(tutorial)
    import tensorflow as tf
    tf.io.gfile.rmtree(keras_dp_tutorial_dir)

with open(os.path.join(out, f"record_{index}.json"), "w") as handle:
    json.dump({
        "is_chief": ctx.is_chief, "pid": os.getpid(), "tensorboard": HAVE_TENSORBOARD,
        "first_epoch_crc": first.epoch_crc, "first_lr": first.lr,
        "restored_crc": second.begin_crc, "second_epochs": history.epoch,
        "second_loss": history.history["loss"], "second_lr": second.lr,
        "stopped_epoch": stop.stopped_epoch, "final_crc": crc(model.get_weights()),
        "loaded_crc": crc(loaded.get_weights()),
    }, handle)
print("worker", index, "done", flush=True)
