"""Launching workers on one machine: `keras-dp launch`, `keras_dp.launch(fn)` (docs/launch.md)."""

from keras_dp.launcher.notebook import WorkerError, launch
from keras_dp.launcher.supervisor import (LaunchResult, Launcher, pick_ports, worker_command,
                                          worker_environments)

__all__ = ["LaunchResult", "Launcher", "WorkerError", "launch", "pick_ports", "worker_command",
           "worker_environments"]
