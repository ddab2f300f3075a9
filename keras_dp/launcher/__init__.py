"""Launching workers on one machine: `keras-dp launch` and `keras_dp.launch(fn)`.

- `launch_command(command, num_workers, ...)` / `Launcher`: N worker
  processes of a command, each with its own TF_CONFIG on free loopback
  ports, prefixed output, signal forwarding, failure summary, restarts.
- `launch(fn, num_workers, args=...)`: runs a Python function (from a
  notebook too) in N fresh worker processes and returns the chief's result.
"""

from keras_dp.launcher.notebook import WorkerError, launch
from keras_dp.launcher.supervisor import (LaunchResult, Launcher, WorkerStatus,
                                          launch_command, pick_ports, worker_command,
                                          worker_environments)

__all__ = ["LaunchResult", "Launcher", "WorkerError", "WorkerStatus", "launch",
           "launch_command", "pick_ports", "worker_command", "worker_environments"]
