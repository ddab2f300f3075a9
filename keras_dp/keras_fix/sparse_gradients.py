"""Keras-layer part `sparse_gradients`: an embedding's duplicate gradient rows are summed.

An embedding lookup's gradient is a `tf.IndexedSlices` with one slice per
occurrence of a row, and the all-reduce of such gradients concatenates the
replicas' slices, so a row appears once per replica that used it. Keras'
optimizers apply non-linear element-wise ops to the slices as they are
(Adam's `square(gradient)` for its second moment), so a duplicated row gets
the sum of its parts' squares instead of the square of its gradient: Adam,
AdamW, RMSprop, Adagrad... update differently from the dense gradient, and N
replicas differ from one device by up to a whole learning-rate step per
element from the first step (4.9e-3 with lr 5e-3 on the position embedding
of `TransformerLM`). Fixed: the duplicate slices of each gradient are summed
(`tf.unique` + `unsorted_segment_sum`) before the optimizer's update, as TF's
Keras 2 optimizers did. Applied whenever keras_dp creates a strategy.
"""

from __future__ import annotations

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
    """Sums the slices of an `IndexedSlices` gradient that share a row.

    Args:
        gradient: A gradient (anything else than `tf.IndexedSlices` is
            returned as it is).

    Returns:
        An `IndexedSlices` with unique indices and the same dense value.
    """
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
