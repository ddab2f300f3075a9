"""Keras-layer part `stock_callbacks`: Keras' own file-writing callbacks, one writer per file.
See docs/dropin_writes.md."""

import functools
import json
import zlib

from keras_dp.chief_files import atomic, elsewhere, position, write_text
from keras_dp.keras_fix._part import Part, Target, lazy, wrap

_CLASSES = (lazy("keras.src.callbacks.model_checkpoint", "ModelCheckpoint"),
            lazy("keras.src.callbacks.tensorboard", "TensorBoard"),
            lazy("keras.src.callbacks.csv_logger", "CSVLogger"),
            lazy("keras.src.callbacks.backup_and_restore", "BackupAndRestore"))
_file_utils = lazy("keras.src.utils.file_utils")

PART = Part(
    "stock_callbacks",
    "every worker's ModelCheckpoint/BackupAndRestore/TensorBoard/CSVLogger writes the same "
    "files (BackupAndRestore: BlockingIOError)",
    "none filed: Keras 3 dropped Keras 2's chief/temporary-directory writes",
    "multi-worker strategies",
    targets=tuple(Target(_CLASSES[which], name) for which, name in (
        (0, "_save_model"), (0, "_get_file_path"), (1, "set_model"), (1, "on_train_end"),
        (2, "on_train_begin"), (2, "on_epoch_end"), (2, "on_train_end"), (3, "on_train_begin"),
        (3, "_save_model"), (3, "_load_model"), (3, "on_train_end"))))


def install() -> None:
    """Replaces the methods (`keras_fix.remove` puts the originals back)."""
    from keras_dp.callbacks import checkpoint as worker

    model_checkpoint, tensorboard, csv_logger, backup = (load() for load in _CLASSES)

    method = functools.partial(wrap, PART.name)

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
    method(backup, "on_train_end",   # only the chief deletes backup_dir
           lambda self, keras, logs=None: keras(logs) if position(self.model)[2] else None)


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
    write_text(self._training_metadata_path,
               json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
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
    parts = [f"epoch {getattr(self.model, '_initial_epoch', None)}"] if metadata else []
    if weights:
        crc = functools.reduce(lambda crc, v: zlib.crc32(v.numpy().tobytes(), crc),
                               self.model.weights, 0)
        parts.append(f"weights crc32 {crc:08x}")
    return ", ".join(parts) or "none"
