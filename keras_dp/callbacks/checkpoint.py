"""Chief-only `ModelCheckpoint`, `TensorBoard` and `CSVLogger`; the functions also serve the
Keras-layer part `stock_callbacks`. See docs/callbacks.md and docs/dropin_writes.md."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from typing import Optional

import keras

from keras_dp.callbacks._storage import first_line, free_space, is_storage_error
from keras_dp.chief_files import is_local, position, private_dir, remove_quietly, temp_name

log = logging.getLogger("keras_dp")


def save_as_worker(callback, save, *args, **kwargs):
    """`ModelCheckpoint._save_model`: a non-chief saves into a temporary directory it deletes."""
    index, _, is_chief = position(callback.model)
    if is_chief or getattr(callback, "_redirect", None):
        return save(*args, **kwargs)
    callback._redirect = private_dir("checkpoint", index)
    verbose, callback.verbose = callback.verbose, 0
    try:
        return save(*args, **kwargs)
    finally:
        shutil.rmtree(callback._redirect, ignore_errors=True)
        callback._redirect, callback.verbose = None, verbose


def file_path_as_worker(callback, path: str) -> str:
    """`ModelCheckpoint._get_file_path`: the path inside the non-chief's temporary directory."""
    redirect = getattr(callback, "_redirect", None)
    return os.path.join(redirect, os.path.basename(path)) if redirect else path


def set_model_as_worker(callback, set_model, model):
    """`TensorBoard.set_model`: a non-chief logs into a temporary directory (`drop_worker_dir`)."""
    index, _, is_chief = position(model)
    worker_dir = getattr(callback, "_worker_dir", None)
    if is_chief or (worker_dir and callback.log_dir == worker_dir):
        return set_model(model)
    drop_worker_dir(callback)
    callback._worker_dir = private_dir("tensorboard", index, at_exit=True)
    log_dir, callback.log_dir = callback.log_dir, callback._worker_dir
    try:
        return set_model(model)
    finally:
        callback.log_dir = log_dir


def drop_worker_dir(callback) -> None:
    """Deletes a non-chief TensorBoard's temporary directory (at the end of training)."""
    worker_dir = getattr(callback, "_worker_dir", None)
    if worker_dir:
        shutil.rmtree(worker_dir, ignore_errors=True)
        callback._worker_dir = None


def writes_csv(callback) -> bool:
    """Whether this worker's `CSVLogger` writes its file (the chief alone)."""
    return position(callback.model)[2]


def csv_is_open(callback) -> bool:
    """Whether the `CSVLogger` opened its file (Keras < 3.11 sets `csv_file` only then)."""
    return getattr(callback, "csv_file", None) is not None


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` (same arguments) where only the chief writes `filepath`,
    atomically; a save the disk refuses is one warning and training goes on."""

    _pending: Optional[tuple] = None   # (temporary path, final path) of the save under way
    _atomic = False

    def _save_model(self, epoch, batch, logs):
        if not position(self.model)[2]:
            return save_as_worker(self, super()._save_model, epoch, batch, logs)
        self._atomic = True
        try:
            super()._save_model(epoch, batch, logs)
            if self._pending is not None and os.path.exists(self._pending[0]):
                os.replace(*self._pending)
        except Exception as exc:  # noqa: BLE001 - only a refused write is handled
            if not is_storage_error(exc):
                raise
            path = self._pending[1] if self._pending else self.filepath
            log.warning("keras_dp: WARNING: ModelCheckpoint could NOT save %s (%s; %s); any "
                        "earlier file there is intact. Training goes on; the next save tries "
                        "again.", path, first_line(exc), free_space(path))
        finally:
            if self._pending is not None:
                remove_quietly(self._pending[0])
            self._atomic, self._pending = False, None

    def _get_file_path(self, epoch, batch, logs):
        path = file_path_as_worker(self, super()._get_file_path(epoch, batch, logs))
        if self._atomic and is_local(path):   # the chief's save
            self._pending = (temp_name(path), path)
            return self._pending[0]
        return path


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` where only the chief writes `log_dir` (same arguments)."""

    @functools.wraps(keras.callbacks.TensorBoard.__init__)   # the same signature
    def __init__(self, *args, **kwargs):
        from keras_dp.keras_fix.tensorboard_check import require_tensorboard

        require_tensorboard("keras_dp.callbacks.TensorBoard")   # here, not after an epoch
        super().__init__(*args, **kwargs)

    def set_model(self, model):
        return set_model_as_worker(self, super().set_model, model)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        drop_worker_dir(self)


class CSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` that only the chief writes (the logs are the run's)."""

    def on_train_begin(self, logs=None):
        if writes_csv(self):
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        if csv_is_open(self):
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if csv_is_open(self):
            super().on_train_end(logs)
