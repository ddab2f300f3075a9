"""Keras callbacks for data-parallel training (`keras_dp.callbacks`).

Worker-aware replacements for Keras' file-writing callbacks, with the same
arguments: in a multi-worker run only the chief writes to your paths.

- `BackupAndRestore`: atomic backups that resume `fit` at the exact step,
  and save at a common step on SIGTERM (preemption).
- `ModelCheckpoint`, `TensorBoard`, `CSVLogger`: chief-only writing.
"""

from keras_dp.callbacks.backup import BackupAndRestore, BackupError
from keras_dp.callbacks.checkpoint import CSVLogger, ModelCheckpoint, TensorBoard

__all__ = ["BackupAndRestore", "BackupError", "CSVLogger", "ModelCheckpoint", "TensorBoard"]
