"""Keras-layer part `chief_saving`: `model.save()` & co. on every worker, one writer per file.

Every guide calls `model.save(path)`, `model.save_weights(path)`,
`model.export(path)` (or `keras.saving.save_model`) unconditionally; under
`MultiWorkerMirroredStrategy` Keras 3 then has every worker write the same
path at once (the file can end up mixed or half written, h5py may fail to
lock it). TF's Keras 2 sent a non-chief's writes to a temporary directory.

With this part, when the model's strategy spans several workers:

- the chief's write lands on the path, atomically: it is written under a
  temporary name next to it (`.NAME.keras_dp-tmp-...`, same suffix) and
  renamed over the path once complete, so a worker killed mid-save leaves
  the previous file (a temporary file such a kill leaves behind is deleted
  by the chief's next save of that path);
- every other worker saves the same model into a private temporary
  directory, deleted right after (saving reads the variables, which
  TensorFlow may turn into collectives, so every worker does the work), then
  waits (at most `WAIT_SECONDS`) until the chief's save of the same rank has
  finished: once `model.save(path)` returns on any worker, `path` loads.
  A path a non-chief chose for itself (the TensorFlow tutorial's
  `write_filepath`, a temporary directory it deletes) is not written either.

On one worker (any single-worker strategy, no strategy) nothing changes:
Keras' functions run as they are. The functions replaced are the ones every
public alias ends in (`keras.saving.save_model`, `keras.models.save_model`,
`tf.keras...`, `Model.save`, `Model.save_weights`, `keras.saving.save_weights`,
the legacy `.h5` format) and `Model.export`. Not atomic (written in place by
the chief): sharded weights (`max_shard_size`), exports other than
`tf_saved_model`, remote directories and `hf://`.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Callable

from keras_dp.chief_files import atomic, clean_stale, elsewhere, position
from keras_dp.keras_fix._part import Part, Target, replace

log = logging.getLogger("keras_dp")

#: How long a non-chief waits for the chief's save to finish before going on.
WAIT_SECONDS = 300.0
_numbers = itertools.count(1)


def _modules():
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.models.model import Model
    from keras.src.saving import saving_api, saving_lib

    return saving_api, saving_lib, legacy_h5_format, Model


def _module(index: int):
    return lambda: _modules()[index]


PART = Part(
    "chief_saving", "model.save/save_weights/export on every worker write the same path",
    "none filed: Keras 3 dropped Keras 2's chief/temporary-directory writes",
    "multi-worker strategies",
    targets=(Target(_module(1), "save_model", ("model", "filepath")),
             Target(_module(1), "save_weights_only", ("model", "filepath")),
             Target(_module(2), "save_model_to_hdf5", ("model", "filepath")),
             Target(_module(3), "export", ("self", "filepath"))))


def install() -> None:
    """Replaces Keras' saving functions (`keras_fix.remove` puts them back)."""
    import functools

    _, saving_lib, legacy, model_class = _modules()
    always, never = (lambda rest, kwargs: True), (lambda rest, kwargs: False)

    def function(owner, name, *, directory=never, replaceable=always):
        original = getattr(owner, name)

        @functools.wraps(original)
        def replaced(model, *args, **kwargs):
            if "filepath" in kwargs:
                path, rest = kwargs["filepath"], args

                def write(target):
                    return original(model, *rest, **{**kwargs, "filepath": target})
            elif args:
                path, rest = args[0], args[1:]

                def write(target):
                    return original(model, target, *rest, **kwargs)
            else:
                return original(model, *args, **kwargs)  # Keras' own TypeError
            return save_as_worker(model, path, write, directory=directory(rest, kwargs),
                                  replaceable=replaceable(rest, kwargs))

        replace(PART.name, owner, name, replaced)

    function(saving_lib, "save_model",
             directory=lambda rest, kwargs: not _argument(rest, kwargs, 1, "zipped", True))
    function(saving_lib, "save_weights_only",
             replaceable=lambda rest, kwargs: _argument(rest, kwargs, 0, "max_shard_size",
                                                        None) is None)
    function(legacy, "save_model_to_hdf5")
    function(model_class, "export", directory=always,
             replaceable=lambda rest, kwargs: _argument(rest, kwargs, 0, "format",
                                                        "tf_saved_model") == "tf_saved_model")


def _argument(rest, kwargs, index: int, name: str, default):
    """An argument after `filepath` of a replaced function, by position or by name."""
    if name in kwargs:
        return kwargs[name]
    return rest[index] if len(rest) > index else default


def save_as_worker(model, path, write: Callable, *, directory: bool = False,
                   replaceable: bool = True):
    """Runs `write(target)` as this worker should write `path` (see the module docstring).

    Args:
        model: The model being saved (its strategy tells the worker's role).
        path: The path the caller asked for.
        write: Writes the model to the path it is given; returns the result.
        directory: The writer makes a directory.
        replaceable: The chief may write under a temporary name and rename
            (False for several files that name one another).

    Returns:
        What `write` returns.
    """
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


def _key(number: int) -> str:
    return f"keras_dp/saving/{number}/done"


def _announce(number: int) -> None:
    """The chief's save number `number` is over (written or failed)."""
    from tensorflow.python.eager import context

    context.context().set_config_key_value(_key(number), "1")


def _wait_for_chief(number: int, index: int, path) -> None:
    from tensorflow.python.eager import context
    from tensorflow.python.framework import errors

    try:
        context.context().get_config_key_value(_key(number),
                                               timeout_in_ms=int(WAIT_SECONDS * 1000))
    except errors.DeadlineExceededError:
        log.warning("keras_dp: worker %d saved %s (into a temporary directory, as a non-chief) "
                    "but the chief has not finished a save of the same rank within %.0f s; "
                    "going on. Call save on every worker (or on the chief alone) so that "
                    "the workers' saves pair up", index, path, WAIT_SECONDS)
