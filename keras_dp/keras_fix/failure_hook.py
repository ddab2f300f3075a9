"""Keras-layer part `failure_hook`: an uncaught exception ends a worker with a named cause.

The hook prints the traceback (a `KerasDPError` without it), then ends the process at once
with keras_dp's exit code (`keras_dp.fault.handle_exception`). See docs/fault_tolerance.md.
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
