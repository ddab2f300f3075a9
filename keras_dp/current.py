"""The process's `keras_dp.scope()` context and default strategy (a leaf: imports no keras_dp)."""

from __future__ import annotations

from typing import Any, Dict

_current: Dict[str, Any] = {}


def current_context():
    """The context of the strategy created by `keras_dp.scope()` in this process, if any."""
    return _current.get("context")


def set_context(context: Any) -> None:
    """Records the process's context (`keras_dp.scope()`)."""
    _current["context"] = context


def resolve_strategy(strategy=None):
    """The strategy to use: the given one, the one whose scope is open, the
    one `keras_dp.scope()` created, or TensorFlow's default strategy."""
    import tensorflow as tf

    if strategy is not None:
        return strategy
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    context = current_context()
    return context.strategy if context is not None else tf.distribute.get_strategy()
