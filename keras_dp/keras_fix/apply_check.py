"""Keras-layer part `apply_check`: `apply_gradients()` outside the replica context is caught.

Keras 3 all-reduces gradients only inside the replica context
(`strategy.run`); a hand-written loop that calls `optimizer.apply_gradients()`
outside it has every worker apply its own gradients, and the model copies
drift apart with no error. The part wraps `TFOptimizer._backend_update_step`
so each such call is checked (`keras_dp.loop_checks.check_apply_context`:
the gradients are compared across workers and `ReplicaContextError` is
raised when they differ). Installed by `keras_dp.scope()` for strategies with
several replicas; `KERAS_DP_CHECKS=0` turns it off.
"""

from __future__ import annotations

import functools
from typing import Mapping, Optional

from keras_dp.keras_fix._part import Part, Target, check, tf_optimizer

PART = Part(
    "apply_check",
    "apply_gradients() outside ctx.run on several workers lets the model copies drift apart "
    "silently", "none filed: Keras all-reduces only inside strategy.run, by design",
    "keras_dp.scope() with several replicas", switch="KERAS_DP_CHECKS=0",
    targets=(Target(tf_optimizer, "_backend_update_step",
                    ("self", "grads", "trainable_variables", "learning_rate")),))

_state = {"original": None}


def _guard(original):
    @functools.wraps(original)
    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        import tensorflow as tf

        from keras_dp.loop_checks import check_apply_context

        checked = check_apply_context(getattr(self, "_distribution_strategy", None), grads)
        if checked is None:
            return original(self, grads, trainable_variables, learning_rate)
        with tf.control_dependencies([checked]):
            grads = [g if g is None else tf.identity(g) for g in grads]
        return original(self, grads, trainable_variables, learning_rate)

    return _backend_update_step


def install(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Installs the check on Keras' TensorFlow optimizer (idempotent).

    Returns:
        Whether the check is installed (False when `KERAS_DP_CHECKS` is off).

    Raises:
        KerasDPError: this Keras is not one the part is for (see `_part.check`).
    """
    from keras_dp.loop_checks import checks_enabled

    if _state["original"] is not None:
        return True
    if not checks_enabled(environ):
        return False
    check(PART)
    owner = tf_optimizer()
    _state["original"] = owner._backend_update_step
    owner._backend_update_step = _guard(_state["original"])
    return True


def uninstall() -> None:
    """Removes the check (tests)."""
    if _state["original"] is not None:
        tf_optimizer()._backend_update_step = _state["original"]
        _state["original"] = None


def is_applied() -> bool:
    return _state["original"] is not None
