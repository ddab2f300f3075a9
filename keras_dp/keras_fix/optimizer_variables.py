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
several replicas.
"""

from __future__ import annotations

import functools

from keras_dp.keras_fix._part import Part, Target, original, replace, tf_optimizer

PART = Part(
    "optimizer_variables",
    "a custom loop's first optimizer.apply() inside strategy.run in a tf.function fails "
    "(You must feed a value for placeholder tensor 'cond/.../Placeholder')",
    "https://github.com/keras-team/keras/issues/23085", "strategies with several replicas",
    targets=(Target(tf_optimizer, "add_variable", ("self", "shape", "initializer")),))


def install() -> None:
    """Makes `TFOptimizer.add_variable` create its variable in `tf.init_scope()`."""
    owner = tf_optimizer()
    keras_add_variable = original(PART.name, owner, "add_variable")

    @functools.wraps(keras_add_variable)
    def add_variable(self, *args, **kwargs):
        import tensorflow as tf

        with tf.init_scope():
            return keras_add_variable(self, *args, **kwargs)

    replace(PART.name, owner, "add_variable", add_variable)
