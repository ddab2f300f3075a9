"""The workload the benchmarks time, and how they time it (child processes only).

The workload is the default `keras-dp train` model, built and compiled by
the job's own code (`keras_dp.train`): the `tiny` TransformerLM (d_model
128, 2 blocks, 4 heads, seq 128) on the builtin corpus, 32 sequences per
replica, the job's AdamW and schedule, XLA. `handwritten_dataset_fn` is the input
pipeline a careful user writes by hand for `distribute_datasets_from_function`
(the baseline of the overhead and GPU benchmarks).

Steps are timed end to end: the time between consecutive ends of training
steps (`on_train_batch_end`), which holds everything a step costs (input,
compute, all-reduce, Keras' own work). The first step of every `fit` call
(iterator start, and tracing/compilation the first time) is not timed.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf


def configure_threads(config: Dict[str, Any]) -> None:
    """Applies `threads` / `inter_threads` of a child's config (before TF starts)."""
    if config.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(int(config["threads"]))
    if config.get("inter_threads"):
        tf.config.threading.set_inter_op_parallelism_threads(int(config["inter_threads"]))


def split_cpu(count: int) -> None:
    """Splits the CPU into `count` logical devices by hand (before TF starts)."""
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def build_lm(preset: str = "tiny", *, seq_len: Optional[int] = None, dtype=None,
             xla: bool = True, **overrides):
    """The default job's model, compiled as the job compiles it (build it in the scope).

    Args:
        preset: A `keras_dp.models.PRESETS` name.
        seq_len: Sequence length (default: the preset's).
        dtype: A mixed-precision policy (`TrainConfig.mixed_precision`) or None.
        xla: Whether the train step is XLA-compiled (given explicitly: every
            compared run of a benchmark must run the same step).
        **overrides: Other `keras_dp.train.TrainConfig` fields (`d_model`,
            `num_layers`, `num_heads`, ...).

    Returns:
        A built, compiled `TransformerLM`: `keras-dp train`'s model,
        optimizer (AdamW, its learning-rate schedule - for the job's default
        batch: the rate does not change what a step costs -, weight decay and
        its exclusions), loss and XLA setting for that `TrainConfig`.
    """
    from keras_dp import train as job
    from keras_dp.data import load_corpus
    from keras_dp.schedules import WarmupSchedule, scaled_learning_rate

    config = job.TrainConfig(preset=preset, seq_len=seq_len, mixed_precision=dtype,
                             xla=bool(xla), **overrides)
    config.check()
    corpus = load_corpus(config.data)
    steps = config.steps or job.TrainConfig.DEFAULT_STEPS
    schedule = WarmupSchedule(
        scaled_learning_rate(config.learning_rate, config.batch_size, config.base_batch),
        min(config.warmup_steps, steps - 1), steps, config.decay, config.min_lr_ratio)
    model = job.build_model(config, corpus.tokenizer)
    job.compile_model(model, config, schedule)
    return model


def builtin_tokens(split: str = "train") -> np.ndarray:
    from keras_dp.data import load_corpus

    return load_corpus("builtin").tokens(split)


def handwritten_dataset_fn(tokens: np.ndarray, seq_len: int, global_batch: int,
                           seed: int = 0):
    """A hand-written per-worker LM pipeline for `distribute_datasets_from_function`.

    Pipeline p of P takes its contiguous 1/P of the tokens, cuts it into
    windows of seq_len+1 at stride seq_len, shuffles them, and batches
    `input_context.get_per_replica_batch_size(global_batch)` rows.
    """

    def dataset_fn(input_context=None):
        pipeline = input_context.input_pipeline_id if input_context else 0
        pipelines = input_context.num_input_pipelines if input_context else 1
        batch = (input_context.get_per_replica_batch_size(global_batch) if input_context
                 else global_batch)
        size = len(tokens)
        part = tokens[pipeline * size // pipelines:(pipeline + 1) * size // pipelines]
        count = (len(part) - 1) // seq_len
        windows = np.lib.stride_tricks.sliding_window_view(part, seq_len + 1)[::seq_len]
        windows = np.ascontiguousarray(windows[:count]).astype(np.int32)
        dataset = tf.data.Dataset.from_tensor_slices(windows)
        dataset = dataset.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat().batch(batch, drop_remainder=True)
        dataset = dataset.map(lambda w: (w[:, :-1], w[:, 1:]),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


class StepTimer(keras.callbacks.Callback):
    """Records when each training step ends (`time.perf_counter()`)."""

    def __init__(self):
        super().__init__()
        self.began: Optional[float] = None
        self.ends: List[float] = []

    def on_train_begin(self, logs=None):
        self.began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def step_seconds(self) -> List[float]:
        """Durations of the steps after the first (consecutive step ends)."""
        return [b - a for a, b in zip(self.ends, self.ends[1:])]


def timed_fit(model, dataset, steps: int) -> List[float]:
    """Trains `steps` steps in one `fit` call; returns the durations of steps 2..steps."""
    timer = StepTimer()
    model.fit(dataset, epochs=1, steps_per_epoch=int(steps), callbacks=[timer], verbose=0)
    return timer.step_seconds()


def set_seed(seed: int = 0) -> None:
    keras.utils.set_random_seed(seed)
