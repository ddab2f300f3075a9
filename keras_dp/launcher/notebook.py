"""`keras_dp.launch(fn, num_workers=N)`: multi-worker training from a notebook.

A notebook's own process must not start TensorFlow's collectives (they can
only be set up once, before anything else runs, and a notebook kernel has
usually run TensorFlow already). `launch` pickles `fn` with cloudpickle (so
functions and lambdas defined in the notebook's `__main__` work), runs it in
N fresh worker processes through the same launcher as `keras-dp launch`,
streams their output into the notebook with `[worker N]` prefixes, and
returns what `fn` returned on the chief, or raises `WorkerError` with the
failing worker's error and traceback.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence

from keras_dp.errors import KerasDPError
from keras_dp.launcher.supervisor import Launcher

PAYLOAD = "payload.pkl"


def result_path(work: str, index: int) -> str:
    return os.path.join(work, f"result-{index}.pkl")


def error_path(work: str, index: int) -> str:
    return os.path.join(work, f"error-{index}.pkl")


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
           kwargs: Optional[Mapping[str, Any]] = None, *, max_restarts: int = 0,
           cpu_replicas: Optional[int] = None, env: Optional[Mapping[str, str]] = None,
           log_dir: Optional[str] = None, port_base: Optional[int] = None,
           host: str = "127.0.0.1") -> Any:
    """Runs `fn(*args, **kwargs)` in `num_workers` fresh worker processes.

    Each worker has its own `TF_CONFIG`, so `keras_dp.scope()` inside `fn`
    creates a MultiWorkerMirroredStrategy over all of them. This process
    never imports TensorFlow for it.

    Args:
        fn: The training function; may be defined in a notebook.
        num_workers: How many worker processes.
        args: Positional arguments for `fn` (pickled with cloudpickle).
        kwargs: Keyword arguments for `fn`.
        max_restarts: Start all workers again up to this many times after a
            failure or preemption (with `keras_dp.callbacks.BackupAndRestore`
            the training resumes).
        cpu_replicas: With `num_workers=1`, split the CPU into this many
            replicas.
        env: Extra environment variables for the workers.
        log_dir: Also write each worker's output to `log_dir/worker-N.log`.
        port_base: First port (default: free ports).
        host: Address the workers use to reach each other.

    Returns:
        What `fn` returned on the chief (worker 0).

    Raises:
        WorkerError: naming the worker that failed first, with its error and
            traceback; the original exception is chained when it unpickles.

    Example:

    ```python
    def train(epochs):
        import keras_dp
        with keras_dp.scope() as ctx:
            model = build_model()
        model.fit(make_dataset(ctx), epochs=epochs)
        return model.get_weights()

    weights = keras_dp.launch(train, num_workers=2, args=(3,))
    ```
    """
    import cloudpickle

    with tempfile.TemporaryDirectory(prefix="keras_dp_launch_") as work:
        with open(os.path.join(work, PAYLOAD), "wb") as handle:
            cloudpickle.dump({"fn": fn, "args": tuple(args), "kwargs": dict(kwargs or {}),
                              "sys_path": list(sys.path)}, handle)
        base = dict(os.environ)
        base.update(env or {})
        command = [sys.executable, "-u", "-m", "keras_dp.launcher._bootstrap", work]
        result = Launcher(command, num_workers, max_restarts=max_restarts,
                          cpu_replicas=cpu_replicas, env=base, log_dir=log_dir,
                          port_base=port_base, host=host, stdout=sys.stdout,
                          stderr=sys.stderr).run()
        if result.returncode == 0:
            with open(result_path(work, 0), "rb") as handle:
                return pickle.load(handle)
        index = result.failed
        status = result.workers[index] if index is not None else None
        report, original = {}, None
        if index is not None and os.path.exists(error_path(work, index)):
            with open(error_path(work, index), "rb") as handle:
                report = pickle.load(handle)
            if report.get("exception"):
                try:
                    original = pickle.loads(report["exception"])
                except Exception:  # noqa: BLE001 - its class may not exist here
                    original = None
    message = result.summary or f"the workers failed (exit code {result.returncode})"
    if report.get("traceback"):
        message += f"\n\nTraceback on worker {index}:\n{report['traceback']}"
    error = WorkerError(message, worker=index,
                        returncode=status.returncode if status else result.returncode,
                        remote_traceback=report.get("traceback", ""), result=result)
    if original is not None:
        raise error from original
    raise error
