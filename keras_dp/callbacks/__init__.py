"""Keras callbacks for data-parallel training.

- `Progress`: a progress display that only the chief shows.
- `Throughput`: examples and tokens per second, total and per replica.
- `LearningRateLogger`, `WarmupScheduler`: learning-rate logging and per-step warmup.
"""

from keras_dp.callbacks.lr import LearningRateLogger, WarmupScheduler, current_learning_rate
from keras_dp.callbacks.progress import Progress
from keras_dp.callbacks.throughput import Throughput
