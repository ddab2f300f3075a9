"""Keras-layer part `sparse_gradients`: an embedding's duplicate gradient rows are summed.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part, Target, replace, tf_optimizer

PART = Part(
    "sparse_gradients",
    "Adam-like optimizers square an embedding gradient's duplicate slices one by one "
    "(N replicas differ from one device)",
    "none filed: found by keras_dp (tests/test_keras_fix.py)", "every keras_dp strategy",
    targets=(Target(tf_optimizer, "_distributed_tf_update_step",
                    ("self", "distribution", "grads_and_vars", "learning_rate")),
             Target(tf_optimizer, "update_step", ("self", "gradient", "variable"))))


def deduplicate(gradient):
    """`gradient` with the slices that share a row summed (other than `IndexedSlices`: as is)."""
    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.size(rows))
    return tf.IndexedSlices(values, rows, gradient.dense_shape)


def install() -> None:
    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        def update(var, grad, learning_rate):
            return self.update_step(deduplicate(grad), var, learning_rate)

        for grad, var in grads_and_vars:
            distribution.extended.update(var, update, args=(grad, learning_rate), group=False)

    replace(PART.name, tf_optimizer(), "_distributed_tf_update_step",
            _distributed_tf_update_step)
