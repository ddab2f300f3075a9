"""Keras-layer part `gradient_clipping`: clipping sees the global batch's gradient.
See docs/keras_layer.md."""

import threading

from keras_dp.keras_fix._part import Part, Target, tf_optimizer, wrap

PART = Part(
    "gradient_clipping",
    "clipnorm/global_clipnorm/clipvalue clip each replica's partial gradient "
    "(N replicas differ from one device)",
    "none filed: found by keras_dp (tests/test_keras_fix.py)", "strategies with several replicas",
    targets=(Target(tf_optimizer, "_clip_gradients", ("self", "grads")),
             Target(tf_optimizer, "_all_reduce_sum_gradients", ("self", "grads_and_vars"))))

_pending = threading.local()   # gradients already all-reduced by _clip_gradients


def install() -> None:
    import tensorflow as tf

    def _clip_gradients(self, keras, grads):   # BaseOptimizer's, inherited
        context = tf.distribute.get_replica_context()
        present = [g for g in grads if g is not None]
        clips = any((getattr(self, name, None) or 0) > 0
                    for name in ("clipnorm", "global_clipnorm", "clipvalue"))
        if not clips or context is None or context.num_replicas_in_sync <= 1 or not present:
            return keras(grads)
        # The global batch's gradient (losses are scaled by 1/replicas), clipped as on one device
        summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
        clipped = keras([None if g is None else next(summed) for g in grads])
        vars(_pending).setdefault("reduced", {})[id(self)] = [g for g in clipped if g is not None]
        return clipped

    def _all_reduce_sum_gradients(self, keras, grads_and_vars):
        grads_and_vars = list(grads_and_vars)
        done = getattr(_pending, "reduced", {}).pop(id(self), None)
        if done is not None and all(g is None or any(g is d for d in done)
                                    for g, _ in grads_and_vars):
            return grads_and_vars  # already all-reduced (and clipped) above
        return keras(grads_and_vars)

    wrap(PART.name, tf_optimizer(), "_clip_gradients", _clip_gradients)
    wrap(PART.name, tf_optimizer(), "_all_reduce_sum_gradients", _all_reduce_sum_gradients)
