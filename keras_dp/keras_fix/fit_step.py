"""Keras-layer part `fit_step`: `keras_dp.callbacks.BackupAndRestore` resumes mid-epoch.

Keras' `fit` calls `model.train_function(iterator)` once per step and gives
callbacks no way to skip the batches a resumed run already trained on, or
to replay a step's logs. `BackupAndRestore` replaces `model.train_function`
on its own model (per instance, never on the class) for the length of a
`fit`, around Keras' compiled function, and puts it back at the end.
Applied by `keras_dp.callbacks.BackupAndRestore`; the switch is not to use it.
"""

from __future__ import annotations

from typing import Callable

from keras_dp.keras_fix._part import Part, Target, check, tf_trainer

PART = Part(
    "fit_step",
    "a resumed fit starts its epoch from the first batch (batches trained twice)",
    "none upstream: Keras' callbacks cannot skip or replay a step",
    "keras_dp.callbacks.BackupAndRestore in fit",
    switch="use keras.callbacks.BackupAndRestore instead of keras_dp's",
    targets=(Target(tf_trainer, "make_train_function", ("self", "force")),))

_ORIGINAL = "_keras_dp_original"


def wrap(model, make: Callable[[Callable], Callable]) -> None:
    """Sets `model.train_function = make(keras_train_function)` (idempotent)."""
    check(PART)
    original = getattr(model.train_function, _ORIGINAL, model.train_function)
    function = make(original)
    setattr(function, _ORIGINAL, original)
    model.train_function = function


def unwrap(model) -> None:
    """Puts Keras' own `train_function` back."""
    original = getattr(model.train_function, _ORIGINAL, None)
    if original is not None:
        model.train_function = original


def is_applied() -> bool:
    return False   # per model, never process-wide
