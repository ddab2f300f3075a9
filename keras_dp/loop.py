"""Custom training loops under `keras_dp.scope()`: reduce, distribute, train_step, metrics.

See docs/custom_loops.md.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Union

from keras_dp import loop_checks
from keras_dp.current import resolve_strategy as _strategy
from keras_dp.errors import ConfigError, KerasDPError
from keras_dp.loss import (agree_on_finite, compute_loss, measure_global_batch,
                           per_example_loss_fn)
from keras_dp.xla import use_xla


def reduce(value, op: str = "sum", *, strategy=None):
    """Reduces per-replica values over all replicas and workers to one value.

    Args:
        value: What `ctx.run()` returned (a nest of per-replica tensors).
        op: `"sum"` (losses from `compute_loss` sum to the global mean) or `"mean"`.
        strategy: Default: the current one.

    Returns:
        The reduced value, the same on every worker.
    """
    import tensorflow as tf

    ops = {"sum": tf.distribute.ReduceOp.SUM, "mean": tf.distribute.ReduceOp.MEAN}
    reduce_op = ops.get(str(op).strip().lower())
    if reduce_op is None:
        raise ConfigError("unknown reduction", variable="op", received=op,
                          fix=f"use one of: {', '.join(ops)}")
    strategy = _strategy(strategy)
    return tf.nest.map_structure(lambda v: strategy.reduce(reduce_op, v, axis=None), value)


def metric_results(metrics: Iterable[Any], *, strategy=None) -> Dict[str, Any]:
    """`{metric.name: result}` over all replicas and workers (every worker must call it)."""
    with _strategy(strategy).scope():
        return {metric.name: metric.result() for metric in metrics}


class DistributedData:
    """A `tf.distribute.DistributedDataset` (`dataset`) whose iterators check the first batch."""

    def __init__(self, dataset, strategy, check_data: bool):
        self.dataset = dataset
        self.strategy = strategy
        self.check_data = check_data

    def __iter__(self):
        import tensorflow as tf

        for index, batch in enumerate(self.dataset):
            if index == 0 and self.check_data and tf.executing_eagerly():
                loop_checks.check_distinct_data(batch, self.strategy)
            yield batch

    @property
    def element_spec(self):
        return self.dataset.element_spec


def distribute(data, *, strategy=None, check_data: bool = True, options=None) -> DistributedData:
    """Spreads a dataset over the replicas and workers, one shard per worker.

    Args:
        data: A `tf.data.Dataset` batched by the GLOBAL batch size (TensorFlow
            shards it per worker), a `dataset_fn(input_context)` batched by the
            per-replica size that shards itself, or a distributed dataset.
        strategy: Default: the current one.
        check_data: Check the first batch for identical data on every replica.
        options: `tf.distribute.InputOptions`.

    Returns:
        A `DistributedData`; iterate it for per-replica batches.
    """
    import tensorflow as tf

    strategy = _strategy(strategy)
    if isinstance(data, DistributedData):
        return data
    if isinstance(data, tf.data.Dataset):
        dataset = strategy.experimental_distribute_dataset(data, options)
    elif hasattr(data, "element_spec") and hasattr(data, "__iter__"):  # a distributed dataset
        dataset = data
    elif callable(data):
        dataset = strategy.distribute_datasets_from_function(data, options)
    else:
        raise ConfigError(
            "is not a tf.data.Dataset, a dataset_fn(input_context) or a distributed dataset",
            variable="data", received=type(data).__name__,
            fix="pass tf.data.Dataset.from_tensor_slices(...).batch(global_batch_size)")
    return DistributedData(dataset, strategy, check_data)


class TrainStep:
    """A compiled data-parallel training step: forward, loss, backward, all-reduce, update.

    Call it on every worker with a per-replica batch (`(x, y)` or `(x, y, sample_weight)`) of
    a distributed dataset. The loss is `compute_loss`'s (GLOBAL batch, regularization).

    Args:
        model: A Keras model built under the strategy's scope.
        optimizer: A Keras optimizer built under the scope (a `LossScaleOptimizer` for
            mixed precision: the replicas then skip non-finite steps together).
        loss: A loss name, a `keras.losses.Loss` or `fn(y_true, y_pred)` -> per-example losses.
        metrics: Keras metrics, updated per replica, read over all replicas and workers.
        strategy: Default: the current one.
        jit_compile: XLA for the forward and backward pass (`"auto"`: when a GPU is visible).
        global_batch_size: Fixed examples per step (default: measured).
        check_data: Check the first batch for identical data on every replica.
    """

    def __init__(self, model, optimizer, loss, *, metrics: Sequence[Any] = (), strategy=None,
                 jit_compile: Union[bool, str] = "auto", global_batch_size: Optional[int] = None,
                 check_data: bool = True):
        import tensorflow as tf

        self.model = model
        self.optimizer = optimizer
        self.metrics = list(metrics)
        self.strategy = _strategy(strategy)
        self.loss_fn = per_example_loss_fn(loss)
        self.global_batch_size = global_batch_size
        self.jit_compile = use_xla("auto" if jit_compile is None else jit_compile,
                                   self.strategy, whole_step=False)
        self._check_data = check_data
        self._loss_scaling = hasattr(optimizer, "inner_optimizer")  # a LossScaleOptimizer
        if not model.trainable_variables:
            raise ConfigError(
                "has no trainable weights yet (it was never built)", variable="model",
                received=type(model).__name__,
                fix="give it a keras.Input, or call it once on a batch, under the scope")
        if not getattr(optimizer, "built", True):
            # A LossScaleOptimizer's variables cannot be created inside the step.
            with self.strategy.scope():
                optimizer.build(model.trainable_variables)
        self._gradients = tf.function(self._forward_backward, jit_compile=self.jit_compile,
                                      reduce_retracing=True)
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _forward_backward(self, x, y, sample_weight, batch_size):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            loss = compute_loss(self.loss_fn(y, y_pred), sample_weight=sample_weight,
                                global_batch_size=batch_size, model=self.model)
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") \
                else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return loss, grads, y_pred

    def _replica_step(self, batch):
        import keras
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        batch_size = measure_global_batch(tf.nest.flatten(x)[0]) if self.global_batch_size is None \
            else tf.constant(float(self.global_batch_size))
        loss, grads, y_pred = self._gradients(x, y, sample_weight, batch_size)
        if self._loss_scaling:
            grads = agree_on_finite(grads)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        for metric in self.metrics:
            metric.update_state(y, y_pred, sample_weight=sample_weight)
        return loss

    def _distributed_step(self, batch):
        with self.strategy.scope():
            loss = reduce(self.strategy.run(self._replica_step, args=(batch,)),
                          strategy=self.strategy)
            return {"loss": loss, **metric_results(self.metrics, strategy=self.strategy)}

    def __call__(self, batch) -> Dict[str, Any]:
        """Trains on one per-replica batch; returns `{"loss": global mean loss, metric: value}`."""
        import tensorflow as tf

        if self._check_data and tf.executing_eagerly():
            self._check_data = False
            loop_checks.check_distinct_data(batch, self.strategy, once=True)
        try:
            return self._step(batch)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            # tf.function's tracing wraps our errors in a StagingError.
            cause = exc
            while cause is not None and not isinstance(cause, KerasDPError) and \
                    getattr(cause, "ag_error_metadata", None) is not None:
                cause = cause.__context__
            if cause is not exc and isinstance(cause, KerasDPError):
                raise cause.with_traceback(None) from None
            raise


train_step = TrainStep  # `step = keras_dp.train_step(model, optimizer, loss)`: logs = step(batch)
