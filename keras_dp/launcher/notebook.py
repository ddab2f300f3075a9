"""`keras_dp.launch(fn, num_workers=N)`: multi-worker training from a notebook (docs/launch.md)."""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence

from keras_dp.errors import KerasDPError
from keras_dp.launcher.supervisor import Launcher

PAYLOAD, RESULT, ERROR = "payload.pkl", "result-{}.pkl", "error-{}.pkl"


class WorkerError(KerasDPError, RuntimeError):
    """A worker started by `keras_dp.launch` failed.

    Attributes:
        worker: Index of the worker that failed first.
        returncode: Its exit status (negative: killed by that signal).
        remote_traceback: The traceback it printed, if it raised.
        result: The `LaunchResult` with every worker's status.
    """

    def __init__(self, message: str, *, worker: Optional[int], returncode: Optional[int],
                 remote_traceback: str = "", result=None):
        super().__init__(message)
        self.worker = worker
        self.returncode = returncode
        self.remote_traceback = remote_traceback
        self.result = result


def launch(fn: Callable[..., Any], num_workers: int = 2, args: Sequence[Any] = (),
           kwargs: Optional[Mapping[str, Any]] = None, *,
           env: Optional[Mapping[str, str]] = None, **options) -> Any:
    """Runs `fn(*args, **kwargs)` in `num_workers` fresh worker processes.

    Each worker has its own `TF_CONFIG`, so `keras_dp.scope()` inside `fn` creates a
    MultiWorkerMirroredStrategy over all of them. This process never imports TensorFlow.

    Args:
        fn: The training function; may be defined in a notebook.
        num_workers: How many worker processes.
        args: Positional arguments for `fn` (pickled with cloudpickle).
        kwargs: Keyword arguments for `fn`.
        env: Extra environment variables for the workers.
        **options: Options of `Launcher` (`max_restarts`, `cpu_replicas`, `log_dir`,
            `port_base`, `host`, ...).

    Returns:
        What `fn` returned on the chief (worker 0).

    Raises:
        WorkerError: naming the worker that failed first, with its error and traceback;
            the original exception is chained when it unpickles (docs/launch.md).
    """
    import cloudpickle

    with tempfile.TemporaryDirectory(prefix="keras_dp_launch_") as work:
        with open(os.path.join(work, PAYLOAD), "wb") as handle:
            cloudpickle.dump({"fn": fn, "args": tuple(args), "kwargs": dict(kwargs or {}),
                              "sys_path": list(sys.path)}, handle)
        command = [sys.executable, "-u", "-m", "keras_dp.launcher._bootstrap", work]
        result = Launcher(command, num_workers, env={**os.environ, **(env or {})},
                          **options).run()
        if result.returncode == 0:
            with open(os.path.join(work, RESULT.format(0)), "rb") as handle:
                return pickle.load(handle)
        index = result.failed  # set whenever a worker failed
        report, original = {}, None
        with contextlib.suppress(FileNotFoundError), \
                open(os.path.join(work, ERROR.format(index)), "rb") as handle:
            report = pickle.load(handle)
        if report.get("exception"):
            with contextlib.suppress(Exception):  # its class may not exist here
                original = pickle.loads(report["exception"])
    message = result.summary
    if report.get("traceback"):
        message += f"\n\nTraceback on worker {index}:\n{report['traceback']}"
    raise WorkerError(message, worker=index, returncode=result.workers[index].returncode,
                      remote_traceback=report.get("traceback", ""), result=result) from original
