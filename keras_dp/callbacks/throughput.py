"""Throughput: examples and tokens per second, in total and per replica (compilation excluded)."""

from __future__ import annotations

import time
from typing import Dict, Optional

import keras

from keras_dp.callbacks.backup import is_replayed_step, steps_per_batch


class Throughput(keras.callbacks.Callback):
    """Measures examples/s and tokens/s of training.

    Args:
        global_batch_size: Examples per step over all replicas.
        tokens_per_example: Tokens per example (the sequence length), or None.
        num_replicas: Replicas in sync (for the per-replica rates).
        skip_steps: Steps not timed at the start (compilation).

    Each epoch's logs get `examples_per_sec` (and `tokens_per_sec`); `summary()` has the totals.
    """

    def __init__(self, global_batch_size: int, tokens_per_example: Optional[int] = None,
                 num_replicas: int = 1, skip_steps: int = 2):
        super().__init__()
        self.global_batch_size = int(global_batch_size)
        self.tokens_per_example = tokens_per_example
        self.num_replicas = max(1, int(num_replicas))
        self.skip_steps = max(0, int(skip_steps))
        self.steps = 0
        self._timed_steps = 0
        self._timed_seconds = 0.0
        self._mark: Optional[float] = None
        self._epoch_start = (0, 0.0)   # (timed steps, timed seconds) when the epoch began

    def on_train_batch_begin(self, batch, logs=None):
        if is_replayed_step(self.model, batch):
            return  # a step done before the backup was restored
        if self._mark is None and self.steps >= self.skip_steps:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if is_replayed_step(self.model, batch):
            return  # a step done before the backup was restored
        executed = steps_per_batch(self.model)
        self.steps += executed
        if self._mark is not None:
            now = time.perf_counter()
            self._timed_seconds += now - self._mark
            self._timed_steps += executed
            self._mark = now

    def on_test_begin(self, logs=None):
        self._mark = None  # validation time is not training time

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (self._timed_steps, self._timed_seconds)
        self._mark = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._rates(self._timed_steps - self._epoch_start[0],
                                    self._timed_seconds - self._epoch_start[1], per_replica=False))

    def _rates(self, steps: int, seconds: float, per_replica: bool = True) -> Dict[str, float]:
        if seconds <= 0 or steps <= 0:
            return {}
        examples = steps * self.global_batch_size / seconds
        rates = {"examples_per_sec": examples}
        if self.tokens_per_example:
            rates["tokens_per_sec"] = examples * self.tokens_per_example
        if per_replica:
            rates.update({f"{k}_per_replica": v / self.num_replicas for k, v in rates.items()})
        return rates

    def summary(self) -> Dict[str, float]:
        """Rates over all timed steps: examples_per_sec, tokens_per_sec, ..._per_replica."""
        return dict(self._rates(self._timed_steps, self._timed_seconds),
                    timed_steps=self._timed_steps, timed_seconds=self._timed_seconds)
