"""Checks for the classic mistakes of hand-written data-parallel loops (docs/custom_loops.md).

`KERAS_DP_CHECKS=0` turns them off; the apply check is installed as `keras_fix.apply_check`.
"""

from __future__ import annotations

import functools
import logging
import warnings
import weakref
from typing import Any, Mapping, Optional, Sequence

from keras_dp.envflags import env_flag
from keras_dp.errors import ReplicaContextError

log = logging.getLogger("keras_dp")

TOLERANCE = 1e-6

_state = {"logged_local": False}
_checked: "weakref.WeakSet" = weakref.WeakSet()  # strategies whose data was checked
# collectives, compiled once per strategy (eager strategy.run is slow and noisy)
_compiled_fns: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class SameDataWarning(UserWarning):
    """Every replica received the same batch: the input pipeline is not sharded."""


def checks_enabled(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether keras_dp's loop checks are on (`KERAS_DP_CHECKS`, default on)."""
    return env_flag("KERAS_DP_CHECKS", True, environ)


def is_multi_worker(strategy) -> bool:
    probe = getattr(getattr(strategy, "extended", None), "_in_multi_worker_mode", None)
    return bool(probe()) if callable(probe) else False


def _data_parallel(strategy) -> bool:
    from keras_dp.strategy import strategy_kind

    return (strategy is not None
            and strategy_kind(strategy) in ("mirrored", "multi_worker_mirrored")
            and (strategy.num_replicas_in_sync > 1 or is_multi_worker(strategy)))


def checksums(tensors: Sequence[Any]):
    """Two position-weighted float64 sums over `tensors` (strings and None skipped)."""
    import tensorflow as tf

    total = tf.zeros([2], tf.float64)
    for index, value in enumerate(tensors):
        if value is None:
            continue
        if isinstance(value, tf.IndexedSlices):
            value = value.values
        value = tf.convert_to_tensor(value)
        if value.dtype in (tf.string, tf.variant):
            continue
        flat = tf.reshape(tf.cast(value, tf.float64), [-1])
        positions = tf.cast(tf.range(tf.size(flat)), tf.float64) * 0.7548776662
        first = tf.reduce_sum(flat * (tf.sin(positions + (1.0 + index)) + 1.5))
        second = tf.reduce_sum(flat * (tf.sin(positions + (2.0 + 3.0 * index)) + 1.5))
        total += tf.stack([first, second])
    return total


def _varied(tensors: Sequence[Any]):
    """Whether any tensor's rows are not all the same (constant data never warns)."""
    import tensorflow as tf

    flags = [tf.constant(False)]
    for value in tensors:
        if value is None:
            continue
        value = tf.convert_to_tensor(value)
        if value.dtype in (tf.string, tf.variant) or value.shape.rank in (None, 0):
            continue
        flags.append(tf.reduce_any(tf.not_equal(value, value[:1])))
    return tf.reduce_any(tf.stack(flags))


def _spread(rows):
    """The largest relative difference of `rows` (a 2-D tensor) from its first row."""
    import tensorflow as tf

    first = rows[:1]
    return tf.reduce_max(tf.abs(rows - first) / tf.maximum(
        tf.maximum(tf.abs(rows), tf.abs(first)), 1e-30))


def _compiled(strategy, fn):
    import tensorflow as tf

    table = _compiled_fns.setdefault(strategy, {})
    if fn not in table:
        table[fn] = tf.function(functools.partial(fn, strategy), reduce_retracing=True)
    return table[fn]


def _gather_rows(strategy, row):
    """`[replicas, len(row)]`: every replica's row, gathered over all workers."""
    import tensorflow as tf

    per_replica = strategy.experimental_distribute_values_from_function(
        lambda _: tf.identity(row)[tf.newaxis])
    return strategy.gather(per_replica, axis=0)


def _gather_batch_checksums(strategy, batch):
    """`[replicas, 3]`: each replica's batch checksums and "varied" flag."""
    import tensorflow as tf

    def replica_fn(batch):
        tensors = tf.nest.flatten(batch)
        row = tf.concat([checksums(tensors), tf.cast(_varied(tensors), tf.float64)[None]], 0)
        return tf.distribute.get_replica_context().all_gather(row[tf.newaxis], axis=0)

    return strategy.experimental_local_results(strategy.run(replica_fn, args=(batch,)))[0]


def _apply_message(strategy, sums=None) -> str:
    workers = getattr(strategy.extended, "_num_workers", "several")
    text = (
        "optimizer.apply_gradients() was called outside the replica context of a "
        f"{workers}-worker strategy, with gradients that differ between workers: they were "
        "computed from each worker's own batch and never all-reduced, so every worker "
        "would apply only its own gradients and the copies of the model would silently "
        "drift apart (dividing them by the number of workers does not help). Fix: compute "
        "the loss with keras_dp.compute_loss and call apply_gradients inside the step "
        "function run by ctx.run(step_fn, batch) (or use keras_dp.train_step), where Keras "
        "all-reduces the gradients. KERAS_DP_CHECKS=0 turns this check off.")
    if sums is not None:
        text += f" Received: gradient checksums per replica={[round(float(s), 6) for s in sums]}"
    return text


def check_apply_context(strategy, grads: Sequence[Any]):
    """`ReplicaContextError` for gradients that differ between workers outside `ctx.run`.

    Eagerly it raises; in graph mode it returns the assertion op (else None).
    """
    import tensorflow as tf

    if not _data_parallel(strategy):
        return None
    context = tf.distribute.get_replica_context()
    if context is not None and context.strategy is strategy:
        return None  # inside strategy.run: Keras all-reduces the gradients
    if not is_multi_worker(strategy):
        if not _state["logged_local"]:
            _state["logged_local"] = True
            log.info("keras_dp: apply_gradients() outside ctx.run: correct, but only one of "
                     "the %d replicas computes; run the step with ctx.run to use them all",
                     strategy.num_replicas_in_sync)
        return None
    gathered = _compiled(strategy, _gather_rows)(checksums(list(grads)))
    spread = _spread(gathered)
    if not tf.executing_eagerly():
        return tf.debugging.assert_less_equal(
            spread, tf.constant(TOLERANCE, tf.float64), message=_apply_message(strategy))
    if float(spread) > TOLERANCE:
        raise ReplicaContextError(_apply_message(strategy, gathered.numpy()[:, 0]))
    return None


def check_distinct_data(batch, strategy, *, once: bool = False) -> None:
    """`SameDataWarning` when every replica got the same non-constant per-replica `batch`.

    Eager, on every worker at once (it all-gathers); `once`: not again for this strategy.
    """
    if not checks_enabled() or strategy.num_replicas_in_sync < 2 or (
            once and strategy in _checked):
        return
    _checked.add(strategy)
    rows = _compiled(strategy, _gather_batch_checksums)(batch).numpy()
    if not rows[:, 2].any() or float(_spread(rows[:, :2])) > TOLERANCE:
        return
    warnings.warn(
        f"every {'worker' if is_multi_worker(strategy) else 'replica'} received the same batch "
        f"({len(rows)} replicas, identical data): the input pipeline is not sharded, so the "
        f"replicas do the same work and the run learns from 1/{len(rows)} of the data it "
        "could. Fix: build the dataset with ctx.distribute(dataset) (TensorFlow shards it per "
        "worker), or in a dataset_fn(input_context) call dataset.shard(input_context."
        "num_input_pipelines, input_context.input_pipeline_id) and use different shuffle "
        "seeds per worker only after sharding. KERAS_DP_CHECKS=0 turns this check off.",
        SameDataWarning, stacklevel=3)
