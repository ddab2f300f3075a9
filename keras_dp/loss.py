"""The loss rule of data parallelism: scale by the GLOBAL batch (see docs/custom_loops.md)."""

from __future__ import annotations

import copy
from typing import Callable

from keras_dp.errors import ConfigError, LossReductionError


def measure_global_batch(per_example_loss):
    """The examples in this step over all replicas and workers (an all-reduce), as float32."""
    import tensorflow as tf

    local = tf.cast(tf.shape(per_example_loss)[0], tf.float32)
    if not tf.distribute.has_strategy():
        return local
    if tf.distribute.in_cross_replica_context():
        raise LossReductionError(
            "compute_loss() was called in the cross-replica context, where there is no "
            "per-replica batch to scale. Call it inside the step function run by "
            "ctx.run(step_fn, batch), or pass global_batch_size=")
    context = tf.distribute.get_replica_context()
    return local if context.num_replicas_in_sync == 1 else context.all_reduce(
        tf.distribute.ReduceOp.SUM, local)


def compute_loss(per_example_loss, *, sample_weight=None, global_batch_size=None, model=None):
    """This replica's share of the mean loss over the GLOBAL batch (docs/custom_loops.md).

    The sum of the per-example losses / the global batch size, plus the model's
    regularization losses / the number of replicas; per-token losses (rank > 1)
    are averaged over their trailing axes first, as Keras does.

    Args:
        per_example_loss: Losses of shape `[batch, ...]` (not a scalar).
        sample_weight: Optional weights, broadcast against the losses.
        global_batch_size: Default: measured (an all-reduce, which a nested
            `tf.function` under a multi-worker strategy does not allow).
        model: Its `model.losses` are added as regularization.

    Returns:
        A float32 scalar to differentiate.

    Raises:
        LossReductionError: a scalar loss, or a cross-replica call without `global_batch_size`.
    """
    import tensorflow as tf

    per_example = tf.convert_to_tensor(per_example_loss)
    if per_example.dtype not in (tf.float32, tf.float64):
        per_example = tf.cast(per_example, tf.float32)  # mixed precision: reduce in float32
    if per_example.shape.rank == 0:
        raise LossReductionError(
            "compute_loss() got a scalar loss, which was already averaged (or summed) over "
            "this replica's batch. Under data parallelism the replicas' gradients are "
            "summed, so a mean over the local batch makes them num_replicas times too "
            "large. Fix: pass per-example losses: a Keras loss built with reduction=None "
            "(e.g. keras.losses.MeanSquaredError(reduction=None)) or a loss function such "
            "as keras.losses.mean_squared_error, without tf.reduce_mean. Received: "
            f"per_example_loss.shape={tuple(per_example.shape)}")
    if sample_weight is not None:
        weight = tf.cast(tf.convert_to_tensor(sample_weight), per_example.dtype)
        rank = per_example.shape.rank
        if rank is not None and weight.shape.rank is not None:
            if weight.shape.rank == rank + 1 and weight.shape[-1] == 1:
                weight = tf.squeeze(weight, -1)
            while weight.shape.rank < rank:
                weight = weight[..., tf.newaxis]
        per_example = per_example * weight
    rank = per_example.shape.rank
    if rank is not None and rank > 1:
        per_example = tf.reduce_mean(per_example, axis=list(range(1, rank)))
    batch = measure_global_batch(per_example) if global_batch_size is None else global_batch_size
    loss = tf.math.divide_no_nan(tf.reduce_sum(per_example), tf.cast(batch, per_example.dtype))
    if model is not None and model.losses:
        loss += tf.nn.scale_regularization_loss(
            tf.add_n([tf.cast(tf.reduce_sum(term), loss.dtype) for term in model.losses]))
    return loss


def per_example_loss_fn(loss) -> Callable:
    """`fn(y_true, y_pred) -> per-example losses` for a loss name, a `keras.losses.Loss`
    (an unreduced copy) or such a function."""
    import keras

    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        unreduced = copy.copy(loss)
        unreduced.reduction = None
        return unreduced
    if not callable(loss):
        raise ConfigError("must be a Keras loss, a loss name or a function (y_true, y_pred)",
                          variable="loss", received=loss, fix="pass e.g. loss='mse'")
    return loss


def agree_on_finite(grads):
    """Makes every replica's gradients NaN when ANY replica's are not finite (mixed precision).

    Keras's `LossScaleOptimizer` decides from the first local replica alone
    whether to skip a step; call this in the replica context (one scalar
    all-reduce) before `apply_gradients` and the replicas skip together.
    """
    import tensorflow as tf

    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in values]))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(~finite, tf.float32))
        finite = tf.equal(bad, 0.0)

    def poison(g):
        if g is None:
            return None
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(poison(g.values), g.indices, g.dense_shape)
        return tf.where(finite, g, tf.constant(float("nan"), g.dtype))

    return [poison(g) for g in grads]
