"""Keras-layer part `failure_hook`: an uncaught exception ends a worker with a named cause.

Python's default `sys.excepthook` prints the traceback and lets the
interpreter exit, which under MultiWorkerMirroredStrategy waits on the dead
or failed peers at TensorFlow's shutdown. When keras_dp creates a
multi-worker strategy, this part's hook still prints the traceback (a
`KerasDPError` without it: it is meant for people), then ends the process at
once (`os._exit`) with keras_dp's exit code: `EXIT_PEER_FAILED` naming the
failed peer, or this worker's own failure reported to the cluster first (see
`keras_dp.fault.handle_exception`).
"""

from __future__ import annotations

import sys

from keras_dp.keras_fix._part import Part

PART = Part(
    "failure_hook",
    "a failed worker's peers wait at exit, and no worker says which one failed",
    "none upstream: keras_dp's exit codes (keras_dp/fault.py)",
    "multi-worker strategies", switch="set sys.excepthook after keras_dp.scope()")

_installed = {}


def install(cluster) -> None:
    """Makes an uncaught exception end this worker with a named cause and exit code."""
    from keras_dp import fault
    from keras_dp.errors import KerasDPError

    if _installed.get("cluster") is not None:
        _installed["cluster"] = cluster
        return
    previous = sys.excepthook
    _installed.update(cluster=cluster, previous=previous)

    def excepthook(exc_type, exc, tb):
        if isinstance(exc, KerasDPError):
            sys.stderr.write(f"{exc}\n")  # meant for people: no traceback
        else:
            previous(exc_type, exc, tb)
        fault._exit_now(fault.handle_exception(exc, _installed["cluster"]), "")

    sys.excepthook = excepthook


def uninstall() -> None:
    """Restores the previous `sys.excepthook` (for tests)."""
    if "previous" in _installed:
        sys.excepthook = _installed["previous"]
    _installed.clear()


def is_applied() -> bool:
    return "previous" in _installed
