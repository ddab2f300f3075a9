"""Keras-layer part `tensorboard_check`: a TensorBoard callback without tensorboard fails at once.
See docs/keras_layer.md."""

import importlib

from keras_dp.errors import ConfigError
from keras_dp.keras_fix._part import Part, Target, lazy, wrap

_callback_class = lazy("keras.src.callbacks.tensorboard", "TensorBoard")


def require_tensorboard(callback: str) -> None:
    """Raises `ConfigError` (naming `callback` and the `pip install`) if `tf.summary` cannot
    write because the tensorboard package is missing."""
    try:   # what tf.summary.scalar & co. import to write (tensorflow/python/summary/tb_summary.py)
        importlib.import_module("tensorboard.summary.v2")
    except ImportError as error:
        raise ConfigError(
            f"{callback} writes its logs with tf.summary, which needs the tensorboard "
            "package, and it cannot be imported (TensorFlow 2.21 no longer installs it)",
            variable="tensorboard",
            fix='pip install tensorboard (or pip install "keras-dp[cpu]", which includes it)',
            received=str(error)) from None


PART = Part(
    "tensorboard_check",
    "keras.callbacks.TensorBoard without tensorboard fails after the first epoch "
    "(TBNotInstalledError)",
    "https://github.com/tensorflow/tensorflow/pull/110709", "every keras_dp strategy",
    targets=(Target(_callback_class, "__init__", ("self", "log_dir")),))


def install() -> None:
    """Makes `keras.callbacks.TensorBoard.__init__` check for tensorboard first."""
    callback_class = _callback_class()

    def __init__(self, keras, *args, **kwargs):
        require_tensorboard(f"{type(self).__module__}.{type(self).__name__}"
                            if type(self) is not callback_class
                            else "keras.callbacks.TensorBoard")
        keras(*args, **kwargs)

    wrap(PART.name, callback_class, "__init__", __init__)
