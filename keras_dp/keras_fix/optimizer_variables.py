"""Keras-layer part `optimizer_variables`: optimizer slots created outside the traced step.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, tf_optimizer, wrap

PART = Part(
    "optimizer_variables",
    "a custom loop's first optimizer.apply() inside strategy.run in a tf.function fails "
    "(You must feed a value for placeholder tensor 'cond/.../Placeholder')",
    "https://github.com/keras-team/keras/issues/23085", "strategies with several replicas",
    targets=(Target(tf_optimizer, "add_variable", ("self", "shape", "initializer")),))


def install() -> None:
    """Makes `TFOptimizer.add_variable` create its variable in `tf.init_scope()`."""
    def add_variable(self, keras, *args, **kwargs):
        import tensorflow as tf

        with tf.init_scope():
            return keras(*args, **kwargs)

    wrap(PART.name, tf_optimizer(), "add_variable", add_variable)
