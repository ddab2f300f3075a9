"""Keras-layer part `warning_filter`: Keras' misleading "shuffle=True was passed" warning.
See docs/keras_layer.md."""

from keras_dp.keras_fix._part import Part

MESSAGE = r".*`shuffle=True` was passed.*"

PART = Part(
    "warning_filter",
    "every fit on a tf.data input warns that shuffle=True is ignored, though keras_dp "
    "datasets shuffle themselves",
    "none filed: Keras warns whenever shuffle is left at True", "keras_dp.scope()",
    switch='warnings.filterwarnings("default", message=MESSAGE) after keras_dp.scope()')

_state = {"applied": False}


def install() -> None:
    """Hides the warning (a `warnings` filter, not a change to Keras' code)."""
    import warnings

    warnings.filterwarnings("ignore", message=MESSAGE, category=UserWarning)
    _state["applied"] = True


def is_applied() -> bool:
    return _state["applied"]
