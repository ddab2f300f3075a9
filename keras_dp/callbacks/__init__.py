"""Keras callbacks for data-parallel training (`keras_dp.callbacks`).

Worker-aware replacements for Keras' file-writing callbacks, with the same
arguments: in a multi-worker run only the chief writes to your paths.

- `BackupAndRestore`: atomic backups that resume `fit` at the exact step,
  and save at a common step on SIGTERM (preemption); `latest_backup()` reads
  where it will resume, `is_replayed_step()` marks the skipped steps.
- `ModelCheckpoint`, `TensorBoard`, `CSVLogger`: chief-only writing.

Training feedback:

- `Progress`: a progress display that only the chief shows.
- `Throughput`: examples and tokens per second, total and per replica.
- `LearningRateLogger`, `WarmupScheduler`: learning-rate logging and per-step warmup.
"""

from keras_dp.callbacks.backup import (BackupAndRestore, BackupError, is_replayed_step,
                                       latest_backup)
from keras_dp.callbacks.checkpoint import CSVLogger, ModelCheckpoint, TensorBoard
from keras_dp.callbacks.lr import LearningRateLogger, WarmupScheduler, current_learning_rate
from keras_dp.callbacks.progress import Progress
from keras_dp.callbacks.throughput import Throughput

__all__ = ["BackupAndRestore", "BackupError", "CSVLogger", "LearningRateLogger",
           "ModelCheckpoint", "Progress", "TensorBoard", "Throughput", "WarmupScheduler",
           "current_learning_rate", "is_replayed_step", "latest_backup"]
