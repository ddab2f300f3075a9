"""Learning-rate schedules for data-parallel training (see docs/data_and_models.md)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import keras
from keras import ops

from keras_dp.errors import ConfigError, whole_number

DECAYS = ("constant", "linear", "cosine")


def scaled_learning_rate(base_lr: float, global_batch: int, base_batch: int) -> float:
    """The linear scaling rule (Goyal et al., 2017): `base_lr * global_batch / base_batch`."""
    if not base_lr > 0:
        raise ConfigError("must be > 0", variable="learning_rate", received=base_lr)
    return float(base_lr) * whole_number(global_batch, "global_batch") / whole_number(
        base_batch, "base_batch")


@keras.saving.register_keras_serializable(package="keras_dp")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak_lr` over `warmup_steps`, then a decay (saved with the optimizer).

    Args:
        peak_lr: The learning rate after warmup (already scaled for the batch).
        warmup_steps: Steps of linear warmup (step s uses `(s+1)/warmup_steps`).
        decay_steps: Step at which the decay reaches its end (the run's total
            steps); None with `decay="constant"`.
        decay: `"constant"`, `"linear"` or `"cosine"`.
        min_ratio: The final learning rate as a fraction of `peak_lr`.
    """

    def __init__(self, peak_lr: float, warmup_steps: int = 0, decay_steps: Optional[int] = None,
                 decay: str = "cosine", min_ratio: float = 0.0):
        if not peak_lr > 0:
            raise ConfigError("must be > 0", variable="peak_lr", received=peak_lr)
        if int(warmup_steps) < 0:
            raise ConfigError("must be >= 0", variable="warmup_steps", received=warmup_steps)
        if decay not in DECAYS:
            raise ConfigError("unknown decay", variable="decay", received=decay,
                              fix=f"use one of: {', '.join(DECAYS)}")
        if decay != "constant" and (decay_steps is None or int(decay_steps) < 1):
            raise ConfigError(f"is needed for decay={decay!r}", variable="decay_steps",
                              received=decay_steps, fix="pass the run's total steps")
        if not 0.0 <= min_ratio <= 1.0:
            raise ConfigError("must be in [0, 1]", variable="min_ratio", received=min_ratio)
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.decay = decay
        self.min_ratio = float(min_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = ops.cast(self.peak_lr, "float32")
        warm = peak * (step + 1.0) / float(max(1, self.warmup_steps))  # unused without warmup
        after = peak
        if self.decay != "constant":
            span = float(max(1, self.decay_steps - self.warmup_steps))
            progress = ops.clip((step - float(self.warmup_steps)) / span, 0.0, 1.0)
            shape = 1.0 - progress if self.decay == "linear" else \
                0.5 * (1.0 + ops.cos(math.pi * progress))
            after = peak * (self.min_ratio + (1.0 - self.min_ratio) * shape)
        return ops.where(step < float(self.warmup_steps), warm, after)

    def get_config(self) -> Dict[str, Any]:
        names = ("peak_lr", "warmup_steps", "decay_steps", "decay", "min_ratio")
        return {name: getattr(self, name) for name in names}
