"""Keras-layer part `chief_saving`: `model.save()` & co. on N workers, one writer per file.
See docs/dropin_writes.md."""

import atexit
import contextlib
import itertools
import logging
import os
import sys
import time
from typing import Callable, Sequence

from keras_dp.chief_files import atomic, clean_stale, elsewhere, position
from keras_dp.keras_fix import _part
from keras_dp.keras_fix._part import Part, Target, lazy, wrap

log = logging.getLogger("keras_dp")

#: How long a non-chief waits for the chief's save to finish before going on.
WAIT_SECONDS = 300.0
_numbers = itertools.count(1)
_DONE = "keras_dp/saving/{}/done"   # the key-value key of a finished save of the chief
_SEEN = "keras_dp/saving/{}/seen/{}"   # worker N read that key
_EXITED = "keras_dp/saving/exited/{}"   # worker N reached its exit
_last = {}   # "number": the chief's last finished save; "exit": the exit hook is registered
_saving_lib = lazy("keras.src.saving.saving_lib")
_legacy_h5 = lazy("keras.src.legacy.saving.legacy_h5_format")
_model = lazy("keras.src.models.model", "Model")

PART = Part(
    "chief_saving", "model.save/save_weights/export on every worker write the same path",
    "none filed: Keras 3 dropped Keras 2's chief/temporary-directory writes",
    "multi-worker strategies",
    targets=(Target(_saving_lib, "save_model", ("model", "filepath")),
             Target(_saving_lib, "save_weights_only", ("model", "filepath")),
             Target(_legacy_h5, "save_model_to_hdf5", ("model", "filepath")),
             Target(_model, "export", ("self", "filepath"))))


def install() -> None:
    """Replaces Keras' saving functions (`keras_fix.remove` puts them back)."""
    def function(owner, name, *, directory=lambda rest, kwargs: False,
                 replaceable=lambda rest, kwargs: True):
        def replaced(model, keras, *args, **kwargs):
            by_name = "filepath" in kwargs
            if not by_name and not args:
                return keras(*args, **kwargs)  # Keras' own TypeError
            path, rest = (kwargs.pop("filepath"), args) if by_name else (args[0], args[1:])

            def write(target):
                if by_name:
                    return keras(*rest, filepath=target, **kwargs)
                return keras(target, *rest, **kwargs)

            return save_as_worker(model, path, write, directory=directory(rest, kwargs),
                                  replaceable=replaceable(rest, kwargs))

        wrap(PART.name, owner, name, replaced)

    function(_saving_lib(), "save_model",
             directory=lambda rest, kwargs: not _argument(rest, kwargs, 1, "zipped", True))
    function(_saving_lib(), "save_weights_only",
             replaceable=lambda rest, kwargs: _argument(rest, kwargs, 0, "max_shard_size",
                                                        None) is None)
    function(_legacy_h5(), "save_model_to_hdf5")
    function(_model(), "export", directory=lambda rest, kwargs: True,
             replaceable=lambda rest, kwargs: _argument(rest, kwargs, 0, "format",
                                                        "tf_saved_model") == "tf_saved_model")
    if not _last.get("exit"):
        atexit.register(at_exit)
        _last["exit"] = True


def _argument(rest, kwargs, index: int, name: str, default):
    """An argument after `filepath` of a replaced function, by position or by name."""
    return kwargs.get(name, rest[index] if len(rest) > index else default)


def save_as_worker(model, path, write: Callable, *, directory: bool = False,
                   replaceable: bool = True):
    """Returns `write(target)`, run as this worker should write `path`; `directory`: `write`
    makes one; `replaceable`: the chief may write a temporary name and rename it."""
    index, count, is_chief = position(model)
    if count <= 1 or not isinstance(path, (str, os.PathLike)):
        return write(path)
    number = next(_numbers)
    if not is_chief:
        with elsewhere(path, "save", index) as private:
            result = write(private)
        _wait_for_chief(number, index, path)
        return result
    try:
        if not replaceable:
            return write(path)
        clean_stale(str(path))
        with atomic(path, directory=directory) as target:
            return write(target)
    finally:
        _announce(number)


def _announce(number: int) -> None:
    """The chief's save number `number` is over (written or failed)."""
    from tensorflow.python.eager import context

    context.context().set_config_key_value(_DONE.format(number), "1")
    _last["number"] = number


def _wait_for_chief(number: int, index: int, path) -> None:
    from tensorflow.python.eager import context
    from tensorflow.python.framework import errors

    try:
        context.context().get_config_key_value(_DONE.format(number),
                                               timeout_in_ms=int(WAIT_SECONDS * 1000))
        context.context().set_config_key_value(_SEEN.format(number, index), "1")
    except errors.DeadlineExceededError:
        log.warning("keras_dp: worker %d saved %s (into a temporary directory, as a non-chief) "
                    "but the chief has not finished a save of the same rank within %.0f s; "
                    "going on. Call save on every worker (or on the chief alone) so that "
                    "the workers' saves pair up", index, path, WAIT_SECONDS)


def at_exit() -> None:
    """At a normal exit (atexit), a non-chief says so, and the chief waits until every other
    worker has read its last save's "done" key or reached its own exit, at most `WAIT_SECONDS`
    (a dead worker is not waited for). The chief hosts TF's coordination service: a worker
    still waiting on that key once the chief's process is gone fails ("connection refused")."""
    if not _part.is_applied(PART.name):
        return
    from tensorflow.python.eager import context

    with contextlib.suppress(Exception):   # at exit: no traceback (the chief may be gone)
        index, count, is_chief = position()
        if count <= 1:
            return
        ctx = context.context()
        if not is_chief:
            ctx.set_config_key_value(_EXITED.format(index), "1")
        elif "number" in _last:
            _wait_for_workers(ctx, _last["number"], index, _addresses())


def _addresses() -> Sequence[str]:
    from keras_dp.multi_worker import _multi_worker

    spec = _multi_worker["strategy"].cluster_resolver.cluster_spec().as_dict()
    return [address for job in ("chief", "worker") for address in spec.get(job, ())]


def _wait_for_workers(ctx, number: int, chief: int, addresses: Sequence[str]) -> None:
    from tensorflow.python.framework import errors

    from keras_dp.fault import unreachable

    def over(worker):
        for key in (_SEEN.format(number, worker), _EXITED.format(worker)):
            try:
                ctx.get_config_key_value(key, timeout_in_ms=200)
                return True
            except errors.DeadlineExceededError:
                pass
        return bool(unreachable([addresses[worker]], timeout=0.5))

    waiting = [i for i in range(len(addresses)) if i != chief]
    started, told = time.monotonic(), False
    try:
        while waiting and time.monotonic() - started < WAIT_SECONDS:
            waiting = [i for i in waiting if not over(i)]
            if waiting and not told and time.monotonic() - started > 10:
                told = True
                sys.stderr.write(
                    f"keras_dp: worker {chief} (the chief) waits for worker(s) "
                    f"{', '.join(map(str, waiting))} to finish reading its save #{number} "
                    f"or to exit (they read from the coordination service this process "
                    f"hosts), at most {WAIT_SECONDS:.0f} s\n")
    except errors.OpError as exc:   # the service failed (a worker died): nobody to wait for
        log.debug("keras_dp: the chief stops waiting at exit: %s", exc)
