"""Keras-layer part `exhausted_input`: no step runs after the last batch.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, tf_trainer, wrap

PART = Part(
    "exhausted_input",
    "evaluate() without steps on an input of unknown length averages in one empty batch, "
    "and fit adds an optimizer step per epoch",
    "none filed: found by keras_dp (tests/test_keras_fix.py)", "every keras_dp strategy",
    targets=(Target(tf_trainer, "_make_function", ("self", "step_function")),))


def install() -> None:
    import tensorflow as tf

    def creates_without_dependencies(next_creator, **kwargs):
        # Variables a first step creates (an optimizer built lazily) are lifted out of the
        # function (XLA needs that): their initial values must not depend on the batch.
        with tf.control_dependencies(None):
            return next_creator(**kwargs)

    def _make_function(self, keras, step_function):
        def step_after_its_batch(data):
            batch = [t for t in tf.nest.flatten(data, expand_composites=True)
                     if isinstance(t, tf.Tensor)]
            with tf.control_dependencies(batch), \
                    tf.variable_creator_scope(creates_without_dependencies):
                return step_function(data)

        return keras(step_after_its_batch)

    wrap(PART.name, tf_trainer(), "_make_function", _make_function)
