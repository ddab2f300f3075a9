"""Keras-layer part `apply_check`: `apply_gradients()` outside the replica context is caught.
See docs/custom_loops.md."""

from typing import Mapping, Optional

from keras_dp.keras_fix import _part
from keras_dp.keras_fix._part import Part, Target, check, tf_optimizer

PART = Part(
    "apply_check",
    "apply_gradients() outside ctx.run on several workers lets the model copies drift apart "
    "silently", "none filed: Keras all-reduces only inside strategy.run, by design",
    "keras_dp.scope() with several replicas", switch="KERAS_DP_CHECKS=0",
    targets=(Target(tf_optimizer, "_backend_update_step",
                    ("self", "grads", "trainable_variables", "learning_rate")),))


def _backend_update_step(self, keras, grads, trainable_variables, learning_rate):
    import tensorflow as tf

    from keras_dp.loop_checks import check_apply_context

    checked = check_apply_context(getattr(self, "_distribution_strategy", None), grads)
    if checked is not None:
        with tf.control_dependencies([checked]):
            grads = [g if g is None else tf.identity(g) for g in grads]
    return keras(grads, trainable_variables, learning_rate)


def install(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Installs the check (idempotent); returns whether it is installed (not when
    `KERAS_DP_CHECKS` is off). Raises `KerasDPError` for a Keras the part is not for."""
    from keras_dp.loop_checks import checks_enabled

    if _part.is_applied(PART.name):
        return True
    if not checks_enabled(environ):
        return False
    check(PART)
    _part.wrap(PART.name, tf_optimizer(), "_backend_update_step", _backend_update_step)
    return True
