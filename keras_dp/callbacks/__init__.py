"""Worker-aware Keras callbacks (only the chief writes your paths); see docs/callbacks.md."""

from keras_dp.callbacks._backup_verify import BackupError
from keras_dp.callbacks.backup import BackupAndRestore, is_replayed_step, latest_backup
from keras_dp.callbacks.checkpoint import CSVLogger, ModelCheckpoint, TensorBoard
from keras_dp.callbacks.lr import LearningRateLogger, WarmupScheduler
from keras_dp.callbacks.progress import Progress
from keras_dp.callbacks.throughput import Throughput

__all__ = ["BackupAndRestore", "BackupError", "CSVLogger", "LearningRateLogger",
           "ModelCheckpoint", "Progress", "TensorBoard", "Throughput", "WarmupScheduler",
           "is_replayed_step", "latest_backup"]
