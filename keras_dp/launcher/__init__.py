"""Launching workers on one machine: `keras-dp launch`, `keras_dp.launch(fn)` (docs/launch.md)."""

from keras_dp.launcher.notebook import WorkerError, launch
from keras_dp.launcher.supervisor import Launcher

__all__ = ["Launcher", "WorkerError", "launch"]
