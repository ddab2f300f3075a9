"""Keras-layer part `chief_saving`: `model.save()` & co. on N workers, one writer per file.
See docs/dropin_writes.md."""

import itertools
import logging
import os
from typing import Callable

from keras_dp.chief_files import atomic, clean_stale, elsewhere, position
from keras_dp.keras_fix._part import Part, Target, lazy, wrap

log = logging.getLogger("keras_dp")

#: How long a non-chief waits for the chief's save to finish before going on.
WAIT_SECONDS = 300.0
_numbers = itertools.count(1)
_DONE = "keras_dp/saving/{}/done"   # the key-value key of a finished save of the chief
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


def _wait_for_chief(number: int, index: int, path) -> None:
    from tensorflow.python.eager import context
    from tensorflow.python.framework import errors

    try:
        context.context().get_config_key_value(_DONE.format(number),
                                               timeout_in_ms=int(WAIT_SECONDS * 1000))
    except errors.DeadlineExceededError:
        log.warning("keras_dp: worker %d saved %s (into a temporary directory, as a non-chief) "
                    "but the chief has not finished a save of the same rank within %.0f s; "
                    "going on. Call save on every worker (or on the chief alone) so that "
                    "the workers' saves pair up", index, path, WAIT_SECONDS)
