"""Custom training loops under `keras_dp.scope()`: the GradientTape path, done right.

Data parallelism by hand has three rules, and this module keeps them:

1. Run the step on every replica (`ctx.run(step_fn, batch)`), so that
   `optimizer.apply_gradients` sees a replica context and Keras sums the
   gradients over all replicas and workers (an all-reduce).
2. Because the gradients are summed, scale the loss by the GLOBAL batch
   (`compute_loss`, see `keras_dp/loss.py`).
3. Give every replica different data (`distribute(dataset)`, which shards
   per worker), and read metrics in the cross-replica context on every
   worker at once (`metric_results`), where Keras's metric variables are
   summed over replicas and workers.

`train_step(model, optimizer, loss)` does all of it in one compiled step,
with optional XLA for the forward and backward pass and mixed precision
(`keras.optimizers.LossScaleOptimizer`); `examples/custom_loop.py` writes
the same step by hand. `keras_dp.loop_checks` catches the classic mistakes.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

from keras_dp import loop_checks
from keras_dp.current import resolve_strategy as _strategy
from keras_dp.errors import ConfigError, KerasDPError
from keras_dp.loss import (agree_on_finite, compute_loss, measure_global_batch,
                           per_example_loss_fn)
from keras_dp.xla import use_xla

__all__ = ["DistributedData", "DistributedIterator", "REDUCE_OPS", "TrainStep",
           "agree_on_finite", "compute_loss", "distribute", "measure_global_batch",
           "metric_results", "per_example_loss_fn", "reduce", "run", "train_step"]

#: Accepted `op` names of `reduce()`.
REDUCE_OPS = ("sum", "mean")


# -- running steps and reducing results --------------------------------------
def run(fn: Callable, *args, strategy=None, **kwargs):
    """Runs `fn(*args, **kwargs)` on every replica (`strategy.run`); returns per-replica values."""
    return _strategy(strategy).run(fn, args=args, kwargs=kwargs)


def reduce(value, op: str = "sum", *, strategy=None):
    """Reduces per-replica values over all replicas and workers to one value.

    Args:
        value: What `run()` returned (a nest of per-replica tensors; each
            is reduced on its own).
        op: `"sum"` (default: losses from `compute_loss` sum to the global
            mean) or `"mean"`.
        strategy: Default: the current one.

    Returns:
        The reduced value, the same on every worker.
    """
    import tensorflow as tf

    key = str(op).strip().lower()
    if key not in REDUCE_OPS:
        raise ConfigError("unknown reduction", variable="op", received=op,
                          fix=f"use one of: {', '.join(REDUCE_OPS)}")
    reduce_op = tf.distribute.ReduceOp.SUM if key == "sum" else tf.distribute.ReduceOp.MEAN
    strategy = _strategy(strategy)
    return tf.nest.map_structure(lambda v: strategy.reduce(reduce_op, v, axis=None), value)


def metric_results(metrics: Iterable[Any], *, strategy=None) -> Dict[str, Any]:
    """Every metric's result over all replicas and workers.

    Keras metric variables are summed across replicas when read in the
    cross-replica context (an all-reduce under a multi-worker strategy), so
    every worker must call this at the same point.

    Returns:
        `{metric.name: value}` (tensors; `float(value)` in eager mode).
    """
    strategy = _strategy(strategy)
    with strategy.scope():
        return {metric.name: metric.result() for metric in metrics}


# -- data ------------------------------------------------------------------------
class DistributedIterator:
    """Iterator over per-replica batches that checks the first batch for duplicated data."""

    def __init__(self, iterator, strategy, check_data: bool):
        self.iterator = iterator  # the tf.distribute iterator (pass this into a tf.function)
        self.strategy = strategy
        self._check = check_data

    def __iter__(self):
        return self

    def __next__(self):
        import tensorflow as tf

        batch = next(self.iterator)
        if self._check and tf.executing_eagerly():
            self._check = False
            loop_checks.check_distinct_data(batch, self.strategy)
        return batch

    def get_next_as_optional(self):
        return self.iterator.get_next_as_optional()

    @property
    def element_spec(self):
        return self.iterator.element_spec


class DistributedData:
    """A distributed dataset whose iterators check the first batch for duplicated data.

    Attributes:
        dataset: The `tf.distribute.DistributedDataset`.
        strategy: The strategy it belongs to.
    """

    def __init__(self, dataset, strategy, check_data: bool = True):
        self.dataset = dataset
        self.strategy = strategy
        self.check_data = check_data

    def __iter__(self) -> DistributedIterator:
        return DistributedIterator(iter(self.dataset), self.strategy, self.check_data)

    @property
    def element_spec(self):
        return self.dataset.element_spec


def distribute(data, *, strategy=None, check_data: bool = True, options=None) -> DistributedData:
    """Spreads a dataset over the replicas and workers, one shard per worker.

    Args:
        data: A `tf.data.Dataset` batched by the GLOBAL batch size (each
            global batch is split across the replicas, and TensorFlow shards
            the input per worker: by file, else by element), or a function
            `dataset_fn(input_context) -> tf.data.Dataset` batched by the
            per-replica size (`input_context.get_per_replica_batch_size`),
            which must shard itself (`input_context.input_pipeline_id`), or a
            `tf.distribute.DistributedDataset` (e.g. `keras_dp.data.text_dataset`).
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
    elif isinstance(data, (tf.distribute.DistributedDataset,)) or (
            hasattr(data, "element_spec") and hasattr(data, "__iter__")):
        dataset = data
    elif callable(data):
        dataset = strategy.distribute_datasets_from_function(data, options)
    else:
        raise ConfigError(
            "is not a tf.data.Dataset, a dataset_fn(input_context) or a distributed dataset",
            variable="data", received=type(data).__name__,
            fix="pass tf.data.Dataset.from_tensor_slices(...).batch(global_batch_size)")
    return DistributedData(dataset, strategy, check_data and loop_checks.checks_enabled())


# -- a complete step -----------------------------------------------------------
class TrainStep:
    """One data-parallel training step for a Keras model, compiled with `tf.function`.

    Built by `keras_dp.train_step()`; call it with a per-replica batch
    (`(x, y)` or `(x, y, sample_weight)`) from a distributed dataset. Every
    worker must call it for every batch.

    Attributes:
        model, optimizer, metrics, strategy: As given.
        jit_compile: Whether the forward and backward pass are XLA-compiled.
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
        self._check_data = check_data and loop_checks.checks_enabled()
        self._loss_scaling = hasattr(optimizer, "inner_optimizer")  # a LossScaleOptimizer
        if not model.trainable_variables:
            raise ConfigError(
                "has no trainable weights yet (it was never built)", variable="model",
                received=type(model).__name__,
                fix="give it a keras.Input, or call it once on a batch, under the scope")
        if not getattr(optimizer, "built", True):
            # Variables created inside the compiled step cannot always be lifted
            # out of it (a LossScaleOptimizer's cannot), so build them now.
            with self.strategy.scope():
                optimizer.build(model.trainable_variables)
        self._gradients = tf.function(self._forward_backward, jit_compile=self.jit_compile,
                                      reduce_retracing=True)
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _forward_backward(self, x, y, sample_weight, batch_size):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=True)
            per_example = self.loss_fn(y, y_pred)
            loss = compute_loss(per_example, sample_weight=sample_weight,
                                global_batch_size=batch_size, model=self.model)
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") \
                else loss
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return loss, grads, y_pred

    def _replica_step(self, batch):
        import keras
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        if self.global_batch_size is not None:
            batch_size = tf.constant(float(self.global_batch_size))
        else:
            batch_size = measure_global_batch(tf.nest.flatten(x)[0])
        loss, grads, y_pred = self._gradients(x, y, sample_weight, batch_size)
        if self._loss_scaling:
            grads = agree_on_finite(grads)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        for metric in self.metrics:
            metric.update_state(y, y_pred, sample_weight=sample_weight)
        return loss

    def _distributed_step(self, batch):
        import tensorflow as tf

        with self.strategy.scope():
            per_replica = self.strategy.run(self._replica_step, args=(batch,))
            logs = {"loss": self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                                 axis=None)}
            for metric in self.metrics:
                logs[metric.name] = metric.result()
        return logs

    def __call__(self, batch) -> Dict[str, Any]:
        """Trains on one per-replica batch; returns `{"loss": global mean loss, metric: value}`."""
        import tensorflow as tf

        if self._check_data and tf.executing_eagerly():
            self._check_data = False
            loop_checks.check_distinct_data(batch, self.strategy, once=True)
        try:
            return self._step(batch)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            # tf.function's tracing wraps our errors in a StagingError; give
            # the user the keras_dp error itself.
            cause = exc
            while cause is not None and not isinstance(cause, KerasDPError) and \
                    getattr(cause, "ag_error_metadata", None) is not None:
                cause = cause.__context__
            if cause is not exc and isinstance(cause, KerasDPError):
                raise cause.with_traceback(None) from None
            raise

    def reset_metrics(self) -> None:
        for metric in self.metrics:
            metric.reset_state()


def train_step(model, optimizer, loss, *, metrics: Sequence[Any] = (), strategy=None,
               jit_compile: Union[bool, str] = "auto", global_batch_size: Optional[int] = None,
               check_data: bool = True) -> TrainStep:
    """A compiled data-parallel training step: forward, loss, backward, all-reduce, update.

    The loss is averaged over the GLOBAL batch (see `compute_loss`), with the
    model's regularization losses; gradients are all-reduced by the
    optimizer inside the replica context; metrics are updated per replica
    and read over all replicas and workers.

    Args:
        model: A Keras model built under the strategy's scope.
        optimizer: A Keras optimizer built under the scope; a
            `keras.optimizers.LossScaleOptimizer` for mixed precision (the
            replicas then agree on skipping steps with non-finite gradients).
        loss: A loss name, a `keras.losses.Loss` (its reduction is ignored:
            per-example losses are used) or `fn(y_true, y_pred)` returning
            per-example losses. A function that returns a scalar is refused
            (`LossReductionError`).
        metrics: Keras metrics, updated with `(y_true, y_pred, sample_weight)`.
        strategy: Default: the current one.
        jit_compile: XLA-compile the forward and backward pass (`"auto"`:
            when a GPU is visible). The all-reduce and update stay outside XLA.
        global_batch_size: Fixed examples per step (default: measured).
        check_data: Check the first batch for identical data on every replica.

    Returns:
        A `TrainStep`: `logs = step(batch)`.

    Example:

    ```python
    with keras_dp.scope() as ctx:
        model = build_model()
        optimizer = keras.optimizers.Adam(1e-3)
    step = keras_dp.train_step(model, optimizer, "mse", metrics=[keras.metrics.MeanAbsoluteError()])
    for batch in ctx.distribute(dataset):
        logs = step(batch)
    ```
    """
    return TrainStep(model, optimizer, loss, metrics=metrics, strategy=strategy,
                     jit_compile=jit_compile, global_batch_size=global_batch_size,
                     check_data=check_data)
