"""Finds TensorFlow without importing it, with a one-line fix when it is missing."""

from __future__ import annotations

import importlib.util

from keras_dp.errors import MissingTensorFlowError


def require_tensorflow() -> None:
    """Raises `MissingTensorFlowError` (an ImportError) naming the extras when TF is missing."""
    try:
        installed = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["tensorflow"] is None
        installed = False
    if not installed:
        raise MissingTensorFlowError(
            "keras_dp needs TensorFlow, which is not installed: pip install 'keras-dp[cpu]' "
            "(tensorflow-cpu) or 'keras-dp[gpu]' (tensorflow[and-cuda]), or install "
            "tensorflow yourself.")
