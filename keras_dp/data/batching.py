"""Batch bookkeeping and `distribute()`: one input pipeline per worker, never auto-sharded.
See docs/data_and_models.md."""

from __future__ import annotations

from typing import Callable

from keras_dp.current import resolve_strategy
from keras_dp.errors import ConfigError, whole_number


def global_batch_size(per_replica_batch: int, strategy=None) -> int:
    """Examples per step over all replicas of `strategy` (default: see `resolve_strategy`):
    `per_replica_batch * replicas`."""
    per_replica_batch = whole_number(per_replica_batch, "per_replica_batch")
    return per_replica_batch * int(resolve_strategy(strategy).num_replicas_in_sync)


def per_replica_batch_size(global_batch: int, num_replicas: int) -> int:
    """`global_batch / num_replicas`, which must divide evenly: the one batch size check.

    Raises:
        ConfigError: `global_batch` is not a whole number >= 1 or does not divide evenly.
    """
    global_batch = whole_number(global_batch, "global_batch_size")
    if global_batch % num_replicas:
        lower = max(1, global_batch // num_replicas) * num_replicas
        raise ConfigError(
            f"does not divide evenly over {num_replicas} replicas", variable="global_batch_size",
            received=global_batch,
            fix=f"use a multiple of {num_replicas} (e.g. {lower} or {lower + num_replicas}), "
                "or give the per-replica batch (keras_dp.data.global_batch_size(per_replica))")
    return global_batch // num_replicas


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Whole global batches in `num_examples` examples (the last partial one is dropped).

    Raises:
        ConfigError: when there is not even one global batch.
    """
    num_examples = int(num_examples)
    global_batch_size = whole_number(global_batch_size, "global_batch_size")
    steps = num_examples // global_batch_size
    if steps < 1:
        raise ConfigError(f"{num_examples} examples do not fill one global batch",
                          variable="global_batch_size", received=global_batch_size,
                          fix=f"use a global batch of at most {max(1, num_examples)}, or more data")
    return steps


def distribute(dataset_fn: Callable, *, global_batch_size: int, strategy=None):
    """Builds one input pipeline per worker with `distribute_datasets_from_function`.

    Args:
        dataset_fn: `dataset_fn(input_context) -> tf.data.Dataset` of per-replica batches
            that reads only pipeline `input_context.input_pipeline_id`'s part of the data.
        global_batch_size: Examples per step over all replicas.
        strategy: The strategy (default: see `resolve_strategy`).

    Returns:
        A `tf.distribute.DistributedDataset` for `model.fit` or `strategy.run`.

    Raises:
        ConfigError: `global_batch_size` does not divide evenly over the replicas.
    """
    import tensorflow as tf

    strategy = resolve_strategy(strategy)
    per_replica_batch_size(global_batch_size, int(strategy.num_replicas_in_sync))

    def pipeline(input_context):
        dataset = dataset_fn(input_context)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(pipeline)
