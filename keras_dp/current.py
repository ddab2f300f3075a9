"""The process's `keras_dp.scope()` context and default strategy (a leaf: imports no keras_dp)."""

from __future__ import annotations

_context = None


def current_context():
    """The context of the strategy created by `keras_dp.scope()` in this process, if any."""
    return _context


def set_context(context) -> None:
    """Records the process's context (`keras_dp.scope()`)."""
    global _context
    _context = context


def resolve_strategy(strategy=None):
    """The strategy to use: the given one, the one whose scope is open, the
    one `keras_dp.scope()` created, or TensorFlow's default strategy."""
    import tensorflow as tf

    if strategy is None and not tf.distribute.has_strategy() and _context is not None:
        return _context.strategy
    return tf.distribute.get_strategy() if strategy is None else strategy
