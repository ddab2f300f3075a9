"""Keras-layer part `warning_filter`: Keras' misleading "shuffle=True was passed" warning.

Keras warns on every `fit` with a tf.data or distributed dataset because
`shuffle` defaults to True; keras_dp datasets shuffle themselves (seeded, per
epoch), so the warning only misleads. Installed by `keras_dp.scope()`; a
program's own `warnings.filterwarnings` calls made later take precedence.
"""

from __future__ import annotations

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
