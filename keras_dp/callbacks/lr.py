"""Learning-rate callbacks: per-step warmup for optimizers compiled with a float, and logging."""

from __future__ import annotations

from typing import Callable

import keras

from keras_dp.callbacks.backup import is_replayed_step


def current_learning_rate(optimizer) -> float:
    """The optimizer's learning rate now (evaluating a schedule at its step)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    value = inner.learning_rate
    value = getattr(value, "value", value)  # a Keras Variable -> its backend tensor
    return float(keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(value)))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the batch and epoch logs as `"lr"`."""

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self.model is not None and self.model.optimizer is not None:
            logs["lr"] = current_learning_rate(self.model.optimizer)

    on_epoch_end = on_train_batch_end


class WarmupScheduler(keras.callbacks.Callback):
    """Sets the learning rate before every training step from `schedule(step)`.

    Args:
        schedule: A `keras_dp.schedules.WarmupSchedule` or any callable `step -> float`.
        initial_step: The optimizer step training starts at (when resuming).
    """

    def __init__(self, schedule: Callable[[int], float], initial_step: int = 0):
        super().__init__()
        self.schedule = schedule
        self.step = int(initial_step)

    def on_train_batch_begin(self, batch, logs=None):
        if is_replayed_step(self.model, batch):
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        optimizer.learning_rate = float(getattr(self.schedule, "value", self.schedule)(self.step))

    def on_train_batch_end(self, batch, logs=None):
        if is_replayed_step(self.model, batch):
            return
        self.step += 1
