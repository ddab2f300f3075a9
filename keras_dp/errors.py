"""keras_dp's errors from a user's environment or arguments: `KerasDPError`s (CLI: exit 2)."""

from __future__ import annotations

from typing import Any, Optional


class KerasDPError(Exception):
    """Base class of every keras_dp error meant for a person to read."""


class ConfigError(KerasDPError, ValueError):
    """A configuration value (environment variable or argument) is wrong (also a `ValueError`).

    Args:
        problem: What is wrong, as one sentence.
        variable: The environment variable or argument it came from.
        field: The field inside that variable (`"task.index"` for TF_CONFIG).
        fix: What the user should do.
        received: The offending value; the message ends with `Received: variable=value`.
    """

    def __init__(self, problem: str, *, variable: Optional[str] = None,
                 field: Optional[str] = None, fix: Optional[str] = None, received: Any = None):
        self.variable = variable
        text = _sentence(problem)
        if variable:
            text = f"{variable} (field '{field}'): {text}" if field else f"{variable}: {text}"
        if fix:
            text += " Fix: " + _sentence(fix)
        if variable is not None and received is not None:
            value = received if isinstance(received, str) else repr(received)
            text += f" Received: {variable}={value[:297] + '...' if len(value) > 300 else value}"
        super().__init__(text)


def whole_number(value: Any, name: str, *, minimum: int = 1, fix: Optional[str] = None) -> int:
    """`value` (an int, numpy integer or whole float; not a bool) as an int, else ConfigError."""
    try:
        whole = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise ConfigError(f"must be a whole number >= {minimum}", variable=name,
                          received=value, fix=fix)
    return int(value)


def _sentence(text: str) -> str:
    """`text` ending with one full stop; an ellipsis ("0, 1, ...") is kept whole."""
    text = text.rstrip()
    return text if text.endswith("...") else text.rstrip(".") + "."


class ClusterConfigError(ConfigError):
    """The environment describes a cluster that is malformed or inconsistent."""


class ConflictingSourcesError(ClusterConfigError):
    """Two sources (e.g. TF_CONFIG and KERAS_DP_WORKERS) describe different clusters."""


class StrategyError(KerasDPError, RuntimeError):
    """A distribution strategy cannot be created as asked, with the reason."""


class MissingTensorFlowError(KerasDPError, ImportError):
    """TensorFlow is not installed."""


class LossReductionError(KerasDPError, ValueError):
    """A loss was averaged over the local batch where per-example losses are needed."""


class ReplicaContextError(KerasDPError, RuntimeError):
    """Training state was updated outside the replica context, so workers would drift apart."""
