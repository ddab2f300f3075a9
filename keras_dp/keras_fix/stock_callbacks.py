"""Keras-layer part `stock_callbacks`: Keras' own file-writing callbacks, one writer per file.

Keras 3's callbacks have no notion of workers (TF's Keras 2 had:
`distributed_file_utils.write_dirpath` sent a non-chief's writes to a
temporary directory). Under `MultiWorkerMirroredStrategy` every worker writes
the same files: `keras.callbacks.BackupAndRestore` fails with
`BlockingIOError: unable to lock file` (h5py), `TensorBoard` puts every
worker's event files in one run folder, `ModelCheckpoint` and `CSVLogger`
write each file once per worker.

This part makes the stock classes behave as keras_dp's own
(`keras_dp.callbacks`) when the model's strategy spans several workers; on
one worker they are Keras' code, untouched:

- `ModelCheckpoint`, `TensorBoard`, `CSVLogger`: the functions of
  `keras_dp.callbacks.checkpoint` (a non-chief saves into a temporary
  directory it deletes, logs into one it deletes at the end of training,
  writes no CSV);
- `BackupAndRestore` (same files, `latest.weights.h5` and
  `training_metadata.json` in `backup_dir`): only the chief writes
  `backup_dir`, each file by an atomic rename (a worker killed mid-save
  leaves the previous backup); a non-chief saves into a temporary directory
  it deletes. On restore every worker reads `backup_dir` (a filesystem all
  of them read), then they compare what they restored (epoch and a checksum
  of the weights) and stop with `keras_dp.callbacks.BackupError` if it
  differs; only the chief repairs a damaged backup from the `.bkp` copy and
  deletes `backup_dir` at the end.

The methods are replaced on the stock classes (rather than swapping the
user's callbacks for keras_dp's in `fit`) so the user's objects stay what
they created: same class, attributes (`best`, `stopped_epoch`, ...) and
subclasses, and the same behaviour on one worker.

`EarlyStopping` and `ReduceLROnPlateau` need nothing: they decide on the
epoch logs, which are the metrics all-reduced over the workers, so every
worker decides the same (tests/test_dropin_writes.py shows it).
"""

from __future__ import annotations

import functools
import json
import zlib

from keras_dp.chief_files import atomic, elsewhere, position
from keras_dp.keras_fix._part import Part, Target, replace


def _classes():
    from keras.src.callbacks.backup_and_restore import BackupAndRestore
    from keras.src.callbacks.csv_logger import CSVLogger
    from keras.src.callbacks.model_checkpoint import ModelCheckpoint
    from keras.src.callbacks.tensorboard import TensorBoard

    return ModelCheckpoint, TensorBoard, CSVLogger, BackupAndRestore


def _class(index: int):
    return lambda: _classes()[index]


PART = Part(
    "stock_callbacks",
    "every worker's ModelCheckpoint/BackupAndRestore/TensorBoard/CSVLogger writes the same "
    "files (BackupAndRestore: BlockingIOError)",
    "none filed: Keras 3 dropped Keras 2's chief/temporary-directory writes",
    "multi-worker strategies",
    targets=tuple(Target(_class(which), name) for which, name in (
        (0, "_save_model"), (0, "_get_file_path"), (1, "set_model"), (1, "on_train_end"),
        (2, "on_train_begin"), (2, "on_epoch_end"), (2, "on_train_end"), (3, "on_train_begin"),
        (3, "_save_model"), (3, "_load_model"), (3, "on_train_end"))))


def install() -> None:
    """Replaces the methods (`keras_fix.remove` puts the originals back)."""
    from keras_dp.callbacks import checkpoint as worker

    model_checkpoint, tensorboard, csv_logger, backup = _classes()

    def method(owner, name, body):
        original = getattr(owner, name)

        @functools.wraps(original)
        def replaced(self, *args, **kwargs):
            return body(self, functools.partial(original, self), *args, **kwargs)

        replace(PART.name, owner, name, replaced)

    method(model_checkpoint, "_save_model", worker.save_as_worker)
    method(model_checkpoint, "_get_file_path",
           lambda self, keras, *args, **kwargs: worker.file_path_as_worker(
               self, keras(*args, **kwargs)))
    method(tensorboard, "set_model", worker.set_model_as_worker)
    method(tensorboard, "on_train_end",
           lambda self, keras, *args, **kwargs: (keras(*args, **kwargs),
                                                 worker.drop_worker_dir(self))[0])
    method(csv_logger, "on_train_begin",
           lambda self, keras, *args, **kwargs: keras(*args, **kwargs)
           if worker.writes_csv(self) else None)
    for name in ("on_epoch_end", "on_train_end"):
        method(csv_logger, name,
               lambda self, keras, *args, **kwargs: keras(*args, **kwargs)
               if worker.csv_is_open(self) else None)
    method(backup, "on_train_begin", _backup_begin)
    method(backup, "_save_model", _backup_save)
    method(backup, "on_train_end", _backup_end)


# -- BackupAndRestore ----------------------------------------------------------------

def _file_utils():
    from keras.src.utils import file_utils

    return file_utils


def _backup_save(self, keras):
    """`_save_model`: the chief writes `backup_dir` atomically; a non-chief elsewhere."""
    index, count, is_chief = position(self.model)
    if count <= 1:
        return keras()
    if not is_chief:
        with elsewhere(self._weights_path, "backup", index) as private:
            self.model.save_weights(filepath=private, overwrite=True)
        return None
    files = _file_utils()
    if not files.exists(self.backup_dir):
        files.makedirs(self.backup_dir)
    if self.double_checkpoint:
        for path, previous in ((self._weights_path, self._prev_weights_path),
                               (self._training_metadata_path,
                                self._prev_training_metadata_path)):
            if files.exists(path):
                _copy(path, previous)
    with atomic(self._weights_path) as temp:
        self.model.save_weights(filepath=temp, overwrite=True)
    with atomic(self._training_metadata_path) as temp, files.File(temp, "w") as handle:
        handle.write(json.dumps({"epoch": self._current_epoch,
                                 "batch": self._last_batch_seen}))
    return None


def _copy(source: str, target: str) -> None:
    with atomic(target) as temp:
        _file_utils().copy(source, temp)


def _backup_begin(self, keras, logs=None):
    """`on_train_begin`: every worker restores from `backup_dir`, then they compare."""
    from keras_dp.callbacks._backup_verify import agree_across_workers

    index, count, is_chief = position(self.model)
    if count <= 1:
        return keras(logs)
    files = _file_utils()
    weights, metadata = self._weights_path, self._training_metadata_path
    try:
        self._load_model()
    except OSError:
        # A damaged latest backup: read the previous one where it is (every
        # worker); the chief puts it back as the latest once all have read.
        if not files.exists(self._prev_weights_path):
            raise
        weights, metadata = self._prev_weights_path, self._prev_training_metadata_path
        saved = self._weights_path, self._training_metadata_path
        self._weights_path, self._training_metadata_path = weights, metadata
        try:
            self._load_model()
        finally:
            self._weights_path, self._training_metadata_path = saved
    agree_across_workers(_restored(self, files.exists(weights), files.exists(metadata)),
                         index, count, self.backup_dir)
    if is_chief and weights != self._weights_path:
        _copy(weights, self._weights_path)
        if files.exists(metadata):
            _copy(metadata, self._training_metadata_path)
        elif files.exists(self._training_metadata_path):
            files.remove(self._training_metadata_path)
    return None


def _restored(self, weights: bool, metadata: bool) -> str:
    """What this worker restored, for comparing with the others."""
    if not weights and not metadata:
        return "none"
    parts = []
    if metadata:
        parts.append(f"epoch {getattr(self.model, '_initial_epoch', None)}")
    if weights:
        crc = 0
        for variable in self.model.weights:
            crc = zlib.crc32(variable.numpy().tobytes(), crc)
        parts.append(f"weights crc32 {crc:08x}")
    return ", ".join(parts)


def _backup_end(self, keras, logs=None):
    """`on_train_end`: only the chief deletes `backup_dir`."""
    if position(self.model)[2]:
        return keras(logs)
    return None
