"""Keras-layer part `exhausted_input`: no step runs after the last batch.

On an input of unknown length (a distributed dataset, `tf.data` with unknown
cardinality) without `steps`, Keras runs the step once more after the last
batch and stops on its `OutOfRangeError`. With `steps_per_execution=1` it
reads the batch with `iterator.get_next()`, and the step's ops that do not
depend on the batch's values still run: a metric's count when the batch
shape is static, the optimizer's iteration counter. `evaluate()` then
divides every metric by one batch too many (1.8719 instead of 1.9704 for 19
batches, i.e. x 19/20) and each `fit` epoch adds one to
`optimizer.iterations` (the learning-rate schedule drifts). Fixed: every op
of the step depends on its batch (control dependencies), so nothing of the
step runs when there is no batch. Applied whenever keras_dp creates a
strategy.
"""

from __future__ import annotations

from keras_dp.keras_fix._part import Part, Target, replace, tf_trainer

PART = Part(
    "exhausted_input",
    "evaluate() without steps on an input of unknown length averages in one empty batch, "
    "and fit adds an optimizer step per epoch",
    "none filed: found by keras_dp (tests/test_keras_fix.py)", "every keras_dp strategy",
    targets=(Target(tf_trainer, "_make_function", ("self", "step_function")),))


def install() -> None:
    import tensorflow as tf

    owner = tf_trainer()
    original = owner._make_function

    def creates_without_dependencies(next_creator, **kwargs):
        # Variables a first step creates (an optimizer built lazily) are lifted
        # out of the function (XLA needs that): their initial values must not
        # depend on the batch.
        with tf.control_dependencies(None):
            return next_creator(**kwargs)

    def _make_function(self, step_function):
        def step_after_its_batch(data):
            batch = [t for t in tf.nest.flatten(data, expand_composites=True)
                     if isinstance(t, tf.Tensor)]
            with tf.control_dependencies(batch), \
                    tf.variable_creator_scope(creates_without_dependencies):
                return step_function(data)

        return original(self, step_after_its_batch)

    replace(PART.name, owner, "_make_function", _make_function)
