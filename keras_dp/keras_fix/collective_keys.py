"""Keras-layer part `collective_keys`: several MirroredStrategy objects in one process.
See docs/keras_layer.md."""

import threading

from keras_dp.keras_fix._part import Part, Target, check, lazy

#: Collective group keys given to each MirroredStrategy keras_dp creates.
KEYS_PER_STRATEGY = 100_000
_mirrored_class = lazy("tensorflow.python.distribute.mirrored_strategy", "MirroredStrategy")

PART = Part(
    "collective_keys",
    "a second MirroredStrategy over other devices in the same process fails (joining a "
    "group with size 4, but that group has size 2)",
    "none filed: TensorFlow numbers every MirroredStrategy's groups from 1",
    "every MirroredStrategy keras_dp creates",
    switch="create the strategy with tf.distribute.MirroredStrategy yourself",
    targets=(Target(_mirrored_class, "_collective_key_base"),))

_lock = threading.Lock()
_count = [0]


def mirrored(devices, cross_device_ops):
    """A `MirroredStrategy` over `devices` with its own range of collective group keys
    (`KerasDPError` for a TensorFlow the part is not for)."""
    check(PART)
    cls = _mirrored_class()
    with _lock:
        previous = cls._collective_key_base
        cls._collective_key_base = KEYS_PER_STRATEGY * _count[0]
        _count[0] += 1
        try:
            return cls(devices=devices, cross_device_ops=cross_device_ops)
        finally:
            cls._collective_key_base = previous


def is_applied() -> bool:
    return _count[0] > 0
