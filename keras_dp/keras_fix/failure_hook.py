"""Keras-layer part `failure_hook`: an uncaught exception ends a worker with a named cause.
See docs/fault_tolerance.md."""

import sys

from keras_dp.keras_fix import _part
from keras_dp.keras_fix._part import Part

PART = Part(
    "failure_hook",
    "a failed worker's peers wait at exit, and no worker says which one failed",
    "none upstream: keras_dp's exit codes (keras_dp/fault.py)",
    "multi-worker strategies", switch="set sys.excepthook after keras_dp.scope()")

_cluster = {}


def install(cluster) -> None:
    """Makes an uncaught exception end this worker with a named cause and exit code."""
    from keras_dp import fault
    from keras_dp.errors import KerasDPError

    _cluster["now"] = cluster
    if _part.is_applied(PART.name):
        return
    previous = sys.excepthook

    def excepthook(exc_type, exc, tb):
        if isinstance(exc, KerasDPError):
            sys.stderr.write(f"{exc}\n")  # meant for people: no traceback
        else:
            previous(exc_type, exc, tb)
        fault._exit_now(fault.handle_exception(exc, _cluster["now"]), "")

    _part.replace(PART.name, sys, "excepthook", excepthook)   # keras_fix.remove() restores it
