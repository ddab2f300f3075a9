"""Keras-layer part `tensorboard_check`: a TensorBoard callback without tensorboard fails at once.

TensorFlow 2.21 no longer installs the `tensorboard` package
(tensorflow/tensorflow#110709; Keras declares it itself from
keras-team/keras#22376 on, after Keras 3.15), and `tf.summary` cannot write
without it. `keras.callbacks.TensorBoard` does not look for it: a program
builds its callbacks, trains a whole epoch, and only then fails with
`TBNotInstalledError: TensorBoard is not installed, missing implementation
for tf.summary.scalar`. With this part (applied whenever keras_dp creates a
strategy) the callback's constructor checks that `tf.summary` can write and
raises a `ConfigError` that names the fix; keras_dp's own
`keras_dp.callbacks.TensorBoard` checks the same on every strategy.

`pip install "keras-dp[cpu]"` (and `[gpu]`, `[tf]`) installs tensorboard, as
`pip install tensorflow` did up to TensorFlow 2.20; `[tensorboard]` alone
adds it to an existing TensorFlow.
"""

from __future__ import annotations

import functools
import importlib

from keras_dp.errors import ConfigError
from keras_dp.keras_fix._part import Part, Target, replace

#: The module `tf.summary.scalar` & co. import to write (tensorflow/python/summary/tb_summary.py).
SUMMARY_MODULE = "tensorboard.summary.v2"


def _callback_class():
    from keras.src.callbacks.tensorboard import TensorBoard

    return TensorBoard


def require_tensorboard(callback: str = "keras.callbacks.TensorBoard") -> None:
    """Raises if `tf.summary` cannot write because the tensorboard package is missing.

    Args:
        callback: The callback's name, for the message.

    Raises:
        ConfigError: tensorboard cannot be imported; the message names the
            `pip install` that fixes it.

    Example:
        >>> require_tensorboard()   # returns quietly where tensorboard is installed
    """
    try:
        importlib.import_module(SUMMARY_MODULE)
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
    original = callback_class.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        require_tensorboard(f"{type(self).__module__}.{type(self).__name__}"
                            if type(self) is not callback_class
                            else "keras.callbacks.TensorBoard")
        original(self, *args, **kwargs)

    replace(PART.name, callback_class, "__init__", __init__)
