"""Keras fix part `optimizer_variables`: optimizer slots created outside the traced step.

Keras builds an optimizer lazily, on its first `apply()`. In a hand-written
loop under a strategy (keras.io's "Writing a training loop from scratch" with
a strategy added, TensorFlow's custom-loop tutorials), that first `apply()`
runs inside `strategy.run` inside a `tf.function`, so Adam's or RMSprop's slot
variables are created while the step is traced, on every replica's thread.
TensorFlow then lifts their initialisation into a `cond` that captures a
placeholder of the traced function, and the first step fails:

    InvalidArgumentError: You must feed a value for placeholder tensor
    'cond/else/_1/cond/Placeholder' with dtype int32

(keras-team/keras#23085, reproduced on Keras 3.15.1 + TF 2.21 with plain
`tf.distribute.MirroredStrategy` over 2 logical CPUs; fixed upstream by
keras-team/keras#23087, which creates optimizer variables in
`tf.init_scope()`.) `model.fit` is not affected: Keras builds the optimizer
before its first step.

The part does what the upstream fix does: `TFOptimizer.add_variable` creates
the variable in `tf.init_scope()`, i.e. eagerly, outside the traced function,
under the same strategy. It is installed for every keras_dp strategy with
several replicas, and only while the installed Keras lacks the upstream fix.
"""

from __future__ import annotations

import functools


def needed(tf_optimizer, original_add_variable) -> bool:
    """Whether this Keras creates optimizer variables where the step is traced.

    Args:
        tf_optimizer: Keras' `TFOptimizer` class.
        original_add_variable: The `add_variable` it has without keras_dp.

    Returns:
        True unless `TFOptimizer` enters `tf.init_scope()` in `add_variable`
        (the upstream fix).
    """
    import inspect

    if "add_variable" not in tf_optimizer.__dict__ or getattr(
            original_add_variable, "__keras_dp_part__", False):
        return True
    try:
        return "init_scope" not in inspect.getsource(original_add_variable)
    except (OSError, TypeError):
        return False


def make_add_variable(original):
    """`original` (Keras' `add_variable`), run in `tf.init_scope()`."""

    @functools.wraps(original)
    def add_variable(self, *args, **kwargs):
        import tensorflow as tf

        with tf.init_scope():
            return original(self, *args, **kwargs)

    add_variable.__keras_dp_part__ = True
    return add_variable
