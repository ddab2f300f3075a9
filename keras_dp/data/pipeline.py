"""Sharded, deterministic language-model batches: B streams, row i of every global batch
from stream i. See docs/data_and_models.md ("The determinism rule")."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Tuple

from keras_dp.data.batching import per_replica_batch_size
from keras_dp.errors import ConfigError, whole_number

log = logging.getLogger("keras_dp")

_SEED_STRIDE = 1 << 32


@dataclasses.dataclass(frozen=True)
class StreamLayout:
    """A split of `num_tokens` tokens cut into `global_batch_size` streams of examples of
    `seq_len` + 1 tokens."""

    num_tokens: int
    global_batch_size: int
    seq_len: int

    def __post_init__(self):
        for name in ("global_batch_size", "seq_len"):
            object.__setattr__(self, name, whole_number(getattr(self, name), name))
        if self.num_tokens < self.global_batch_size * (self.seq_len + 1):
            most = max(1, self.num_tokens // (self.seq_len + 1))
            raise ConfigError(
                f"the split has {self.num_tokens:,} tokens, too few for a global batch of "
                f"{self.global_batch_size} sequences of {self.seq_len}+1 tokens (each of the "
                f"{self.global_batch_size} streams needs at least {self.seq_len + 1} tokens)",
                variable="global_batch_size", received=self.global_batch_size,
                fix=f"use a global batch of at most {most}, a shorter seq_len, or more data")

    def bound(self, stream: int) -> int:
        """First token of `stream` (the end of the last stream for stream == B)."""
        return stream * self.num_tokens // self.global_batch_size

    def examples_in(self, stream: int) -> int:
        return (self.bound(stream + 1) - self.bound(stream) - 1) // self.seq_len

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch (the smallest stream's examples)."""
        return min(self.examples_in(i) for i in range(self.global_batch_size))

    def pipeline_streams(self, pipeline: int, num_pipelines: int) -> Tuple[int, int]:
        """The streams `[first, stop)` input pipeline `pipeline` of `num_pipelines` serves."""
        per = self.global_batch_size // num_pipelines
        return pipeline * per, (pipeline + 1) * per

    def token_range(self, first: int, stop: int) -> Tuple[int, int]:
        return self.bound(first), self.bound(stop)


def pipeline_dataset(corpus, split: str, layout: StreamLayout, input_context, *, seed: int = 0,
                     shuffle: bool = True, repeat: bool = True, start_step: int = 0,
                     epoch_steps: Optional[int] = None):
    """The per-replica batches `(inputs, targets)`, int32 `[B/R, seq_len]`, that
    `input_context`'s pipeline serves; the options are `text_dataset`'s."""
    import tensorflow as tf

    pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
    replicas = input_context.num_replicas_in_sync
    per_replica = per_replica_batch_size(layout.global_batch_size, replicas)
    local_replicas = replicas // pipelines
    first, stop = layout.pipeline_streams(pipeline, pipelines)
    begin, end = layout.token_range(first, stop)
    seq_len = layout.seq_len
    steps = layout.steps_per_epoch
    if epoch_steps is not None:
        steps = max(1, min(steps, int(epoch_steps)))
    max_examples = max(layout.examples_in(i) for i in range(layout.global_batch_size))
    first_epoch, skip = divmod(int(start_step), steps)
    log.debug("keras_dp: input pipeline %d/%d reads %s tokens [%d, %d) (streams %d-%d)",
              pipeline, pipelines, split, begin, end, first, stop - 1)

    stream_ids = tf.constant(list(range(first, stop)), tf.int64)
    offsets_t = tf.constant([layout.bound(i) - begin for i in range(first, stop)], tf.int64)
    counts_t = tf.constant([layout.examples_in(i) for i in range(first, stop)], tf.int64)
    window = tf.range(seq_len + 1, dtype=tf.int64)

    def epoch_order(epoch):
        """[steps, streams] example index of each local stream at each step."""
        if not shuffle:
            return tf.tile(tf.range(steps, dtype=tf.int64)[:, None], [1, stop - first])
        seeds = tf.stack([tf.fill([stop - first], tf.constant(seed, tf.int64)),
                          stream_ids * _SEED_STRIDE + epoch], axis=1)
        keys = tf.map_fn(lambda s: tf.random.stateless_uniform([max_examples], seed=s),
                         seeds, fn_output_signature=tf.float32)
        valid = tf.range(max_examples, dtype=tf.int64)[None, :] < counts_t[:, None]
        keys = tf.where(valid, keys, 2.0)  # past a stream's end: sorted last
        order = tf.argsort(keys, axis=1, stable=True)[:, :steps]
        return tf.transpose(tf.cast(order, tf.int64))

    last_epoch = (1 << 62) if repeat else 1
    if not repeat and first_epoch >= 1:
        raise ConfigError("is past the end of the (non-repeating) dataset",
                          variable="start_step", received=start_step)
    order = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(
        lambda epoch: tf.data.Dataset.from_tensor_slices(epoch_order(epoch))).skip(skip)

    def batches(tokens):
        def rows(index):
            starts = offsets_t + index * seq_len
            sequences = tf.cast(tf.gather(tokens, starts[:, None] + window[None, :]), tf.int32)
            inputs = tf.reshape(sequences[:, :-1], [local_replicas, per_replica, seq_len])
            targets = tf.reshape(sequences[:, 1:], [local_replicas, per_replica, seq_len])
            return tf.data.Dataset.from_tensor_slices((inputs, targets))

        return order.flat_map(rows)

    tokens = corpus.token_dataset(split, begin, end, input_context=input_context)
    return tokens.flat_map(batches).prefetch(tf.data.AUTOTUNE)
