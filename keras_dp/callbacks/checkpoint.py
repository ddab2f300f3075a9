"""Chief-only `ModelCheckpoint`, `TensorBoard` and `CSVLogger`.

Drop-in replacements for the Keras callbacks of the same names (same
arguments), for multi-worker training: only the chief writes to the paths
you give. The other workers still run everything that may involve them
(saving reads variables, which TensorFlow may turn into collectives), but
into a temporary directory of their own that they delete; `CSVLogger` does
nothing on them, as writing a CSV row involves no other worker. In a single
process they behave exactly like Keras'.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Optional

import keras

from keras_dp.errors import ConfigError
from keras_dp.fault import worker_position


def _role(model):
    """`(worker index, is chief)` for the model's strategy."""
    index, _, is_chief = worker_position(model.distribute_strategy)
    return index, is_chief


def _temp_dir(kind: str, index: int) -> str:
    path = tempfile.mkdtemp(prefix=f"keras_dp_{kind}_worker{index}_")
    atexit.register(shutil.rmtree, path, True)
    return path


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` where only the chief writes `filepath`.

    Same arguments as Keras'. On the other workers the model is saved to a
    temporary file (deleted right after), so every worker does the same work.

    Example:

    ```python
    keras_dp.callbacks.ModelCheckpoint("/shared/run1/model-{epoch:02d}.keras")
    ```
    """

    _redirect: Optional[str] = None

    def _save_model(self, epoch, batch, logs):
        index, is_chief = _role(self.model)
        if is_chief:
            return super()._save_model(epoch, batch, logs)
        self._redirect = tempfile.mkdtemp(prefix=f"keras_dp_checkpoint_worker{index}_")
        verbose, self.verbose = self.verbose, 0
        try:
            return super()._save_model(epoch, batch, logs)
        finally:
            shutil.rmtree(self._redirect, ignore_errors=True)
            self._redirect = None
            self.verbose = verbose

    def _get_file_path(self, epoch, batch, logs):
        path = super()._get_file_path(epoch, batch, logs)
        if self._redirect:
            return os.path.join(self._redirect, os.path.basename(path))
        return path


class TensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` where only the chief writes to `log_dir`.

    Same arguments as Keras'. The other workers write their summaries to a
    temporary directory, deleted when training ends.
    """

    _worker_dir: Optional[str] = None

    def __init__(self, *args, **kwargs):
        from keras_dp.tensorboard_check import require_tensorboard

        require_tensorboard("keras_dp.callbacks.TensorBoard")   # here, not after an epoch
        super().__init__(*args, **kwargs)

    def set_model(self, model):
        try:
            import tensorboard  # noqa: F401 - tf.summary needs it to write anything
        except ImportError:
            raise ConfigError(
                "the TensorBoard callback needs the tensorboard package, which "
                "tensorflow-cpu does not install", variable="TensorBoard",
                fix="pip install tensorboard") from None
        index, is_chief = _role(model)
        if is_chief:
            return super().set_model(model)
        self._drop_worker_dir()
        self._worker_dir = _temp_dir("tensorboard", index)
        log_dir, self.log_dir = self.log_dir, self._worker_dir
        try:
            return super().set_model(model)
        finally:
            self.log_dir = log_dir

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._drop_worker_dir()

    def _drop_worker_dir(self):
        if self._worker_dir:
            shutil.rmtree(self._worker_dir, ignore_errors=True)
            self._worker_dir = None


class CSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` that only the chief writes.

    Same arguments as Keras'. The epoch logs are already averaged over all
    workers, so the chief's file is the run's.
    """

    def _is_chief(self) -> bool:
        return _role(self.model)[1]

    def on_train_begin(self, logs=None):
        if self._is_chief():
            super().on_train_begin(logs)

    # Keras < 3.11 sets `csv_file` only in on_train_begin, which a non-chief skips.
    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "csv_file", None) is not None:
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if getattr(self, "csv_file", None) is not None:
            super().on_train_end(logs)
