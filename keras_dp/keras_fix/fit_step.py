"""Keras-layer part `fit_step`: `keras_dp.callbacks.BackupAndRestore` resumes mid-epoch
(on its own model's `train_function`, for a `fit`). See docs/backups.md."""

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
