"""keras_dp: data-parallel training of Keras 3 models on tf.distribute (see README.md).

Only cluster resolution and the errors are imported eagerly; the rest on first use.
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

# name -> (module, attribute or None for the module itself)
_LAZY = {name: (f"keras_dp.{name}", None) for name in (
    "callbacks", "data", "fault", "keras_fix", "launcher", "loop", "loop_checks", "models",
    "mpi", "preemption", "schedules", "strategy")}
for _module, _names in {
        "context": ("scope", "Context"), "current": ("current_context",),
        "strategy": ("get_strategy",), "launcher.notebook": ("launch",),
        "loss": ("compute_loss",), "loop_checks": ("SameDataWarning",),
        "loop": ("train_step", "TrainStep", "distribute", "metric_results")}.items():
    _LAZY.update((name, (f"keras_dp.{_module}", name)) for name in _names)
del _module, _names

__all__ = [
    "ClusterConfigError", "ClusterInfo", "ConfigError", "ConflictingSourcesError",
    "KerasDPError", "LossReductionError", "MissingTensorFlowError", "ReplicaContextError",
    "StrategyError", "resolve_cluster", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_dp' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
