"""keras_dp: data-parallel training of Keras 3 models on tf.distribute that just works.

```python
import keras_dp
with keras_dp.scope() as ctx:
    model = keras_dp.models.TransformerLM.from_preset("tiny")
    model.compile(optimizer="adam")
    model.fit(keras_dp.data.text_dataset("builtin", global_batch_size=ctx.global_batch(32)),
              steps_per_epoch=200)
```

Cluster resolution (`resolve_cluster`) is pure Python and imports no
TensorFlow; everything else is imported on first use, so `keras-dp tf-config`
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_dp import early as _early
from keras_dp._tf_check import require_tensorflow
from keras_dp.cluster import ClusterInfo, resolve_cluster
from keras_dp.errors import (ClusterConfigError, ConfigError, ConflictingSourcesError,
                             KerasDPError, LossReductionError, MissingTensorFlowError,
                             ReplicaContextError, StrategyError)

require_tensorflow()
_early.install()   # multi-worker collectives set up when TensorFlow is imported

__version__ = "0.1.0"

# Public names imported on first use: name -> (module, attribute or None for the module).
_LAZY = {
    "scope": ("keras_dp.context", "scope"),
    "Context": ("keras_dp.context", "Context"),
    "current_context": ("keras_dp.context", "current_context"),
    "get_strategy": ("keras_dp.strategy", "get_strategy"),
    "keras_fix": ("keras_dp.keras_fix", None),
    "strategy": ("keras_dp.strategy", None),
    # launcher, worker-aware callbacks, failures and preemption
    "launch": ("keras_dp.launcher.notebook", "launch"),
    "launcher": ("keras_dp.launcher", None),
    "callbacks": ("keras_dp.callbacks", None),
    "fault": ("keras_dp.fault", None),
    "preemption": ("keras_dp.preemption", None),
    # custom training loops
    "compute_loss": ("keras_dp.loop", "compute_loss"),
    "train_step": ("keras_dp.loop", "train_step"),
    "TrainStep": ("keras_dp.loop", "TrainStep"),
    "distribute": ("keras_dp.loop", "distribute"),
    "metric_results": ("keras_dp.loop", "metric_results"),
    "loop": ("keras_dp.loop", None),
    "loop_checks": ("keras_dp.loop_checks", None),
    "SameDataWarning": ("keras_dp.loop_checks", "SameDataWarning"),
    "mpi": ("keras_dp.mpi", None),
    # data, models, schedules
    "data": ("keras_dp.data", None),
    "models": ("keras_dp.models", None),
    "schedules": ("keras_dp.schedules", None),
}

__all__ = [
    "ClusterConfigError", "ClusterInfo", "ConfigError", "ConflictingSourcesError",
    "Context", "KerasDPError", "LossReductionError", "MissingTensorFlowError",
    "ReplicaContextError", "StrategyError",
    "current_context", "get_strategy", "resolve_cluster", "scope", "__version__",
] + [name for name in _LAZY if name not in ("Context", "current_context", "get_strategy",
                                             "scope")]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_dp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
