"""Test-only observer for the compat corpus: Python loads it at start-up from PYTHONPATH.

The corpus' programs stay as their public sources wrote them; `tests/compat/`
puts this folder first on PYTHONPATH and sets `COMPAT_HARNESS_DIR`, and every
Python process of the run (the program alone, or each worker under
`keras-dp launch` or a hand-written TF_CONFIG) then records, for the test:

- `weights-<task>-<pid>.npz`: at exit, the values of the variables the last
  optimizer to apply gradients trains (its `_trainable_variables`, in order):
  the model the program trained last, whether through `fit` or a hand-written
  `optimizer.apply` / `apply_gradients`.
- `writes-<task>-<pid>.json`: every file under the working directory that the
  process opened for writing or renamed into place through Python (a Python
  audit hook: Keras' `.keras` archives, JSON and CSV files; files that C code
  writes, such as h5py's or TensorFlow's checkpoints, are not seen).

`<task>` is `worker<index>` from TF_CONFIG, or `single` without one. Processes
that never import Keras (the `keras-dp launch` supervisor) write nothing.
Without `COMPAT_HARNESS_DIR` this module does nothing.
"""

import atexit
import importlib.abc
import importlib.util
import json
import os
import sys

OUTPUT = os.environ.get("COMPAT_HARNESS_DIR")
_optimizers = []  # optimizers in the order they first applied gradients
_writes = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _task():
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task") or {}
    except ValueError:
        task = {}
    if "index" not in task:
        return "single"
    return f"{task.get('type', 'worker')}{task['index']}"


def _audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        if not writing:
            return
    elif event == "os.rename":
        path = args[1]
    else:
        return
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.fsdecode(path)
        absolute = os.path.abspath(path)
        if absolute.startswith(_CWD + os.sep):
            _writes.append(os.path.relpath(absolute, _CWD))


def _record_optimizer(base_optimizer):
    original = base_optimizer.apply

    def apply(self, grads, trainable_variables=None):
        if not any(o is self for o in _optimizers):
            _optimizers.append(self)
            # Run the dump before the atexit handlers registered since start-up
            # (TensorFlow's), while the variables can still be read.
            atexit.unregister(_dump)
            atexit.register(_dump)
        return original(self, grads, trainable_variables)

    base_optimizer.apply = apply


class _KerasHook(importlib.abc.MetaPathFinder):
    """Wraps `BaseOptimizer.apply` once the `keras` package has been imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self not in sys.meta_path:
            return None
        # Find the real spec with the other finders (a find_spec() call that
        # does not import must not use the hook up: TensorFlow makes such calls).
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_hook(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            exec_module(module)
            from keras.src.optimizers.base_optimizer import BaseOptimizer

            _record_optimizer(BaseOptimizer)
            atexit.register(_dump)

        spec.loader.exec_module = exec_and_hook
        return spec


def _dump():
    if "keras" not in sys.modules:
        return
    name = f"{_task()}-{os.getpid()}"
    os.makedirs(OUTPUT, exist_ok=True)
    with open(os.path.join(OUTPUT, f"writes-{name}.json"), "w") as handle:
        json.dump(_writes, handle)
    if _optimizers:
        import numpy as np

        variables = _optimizers[-1]._trainable_variables
        np.savez(os.path.join(OUTPUT, f"weights-{name}.npz"),
                 **{f"{i:03d}:{v.path}": np.asarray(v.numpy()) for i, v in enumerate(variables)})


if OUTPUT:
    _CWD = os.path.abspath(os.getcwd())
    sys.addaudithook(_audit)
    sys.meta_path.insert(0, _KerasHook())
