"""keras_dp's one XLA policy: whether a step is compiled with XLA (see docs/xla.md).

Used by `keras-dp train` (Keras' whole `fit` step) and `keras_dp.train_step` (each
replica's forward and backward pass).
"""

from __future__ import annotations

from typing import Optional, Union

from keras_dp.errors import ConfigError


def _replicas_on_cpu(strategy) -> bool:
    try:
        devices = tuple(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):   # a strategy without device list
        devices = ()
    return bool(devices) and all("CPU" in str(d).upper().rsplit("/", 1)[-1] for d in devices)


def use_xla(requested: Optional[Union[bool, str]], strategy, *, whole_step: bool) -> bool:
    """Whether to XLA-compile a step on `strategy`.

    Args:
        requested: True or False (as asked, checked); `"auto"`: XLA where an
            accelerator is visible (Keras' meaning of `jit_compile="auto"`);
            None: XLA wherever TensorFlow can compile the step.
        strategy: The `tf.distribute.Strategy` the step runs on.
        whole_step: The whole distributed step is compiled (Keras' `fit`), not
            each replica's forward and backward pass (`keras_dp.train_step`).

    Returns:
        Whether the step is compiled with XLA.

    Raises:
        ConfigError: XLA was asked for where TensorFlow cannot compile the step.
    """
    if requested == "auto":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    from keras_dp import keras_fix

    if (not whole_step or int(strategy.num_replicas_in_sync) <= 1
            or keras_fix.is_applied("replica_xla")):
        return True if requested is None else bool(requested)
    on_cpu = _replicas_on_cpu(strategy)
    if requested is None:
        return not on_cpu
    if requested and on_cpu:
        raise ConfigError(
            f"TensorFlow cannot XLA-compile a train step over {strategy.num_replicas_in_sync} "
            "CPU replicas without the Keras fix's part replica_xla (KERAS_DP_KERAS_FIX leaves "
            "it out): MirroredStrategy over logical CPUs reads another device's variables; "
            "MultiWorkerMirroredStrategy has no XLA CPU kernel for CollectiveGatherV2",
            variable="xla", received=True,
            fix="allow the part replica_xla (unset KERAS_DP_KERAS_FIX) or pass --no-xla")
    return bool(requested)
