"""The Keras layer: every change keras_dp makes to Keras' or TensorFlow's behaviour.

One module per part (its `PART` and `install()`); `REGISTRY` lists them, `keras-dp env`
prints them, `KERAS_DP_KERAS_FIX` switches them. See docs/keras_layer.md."""

import functools
import importlib
import logging
import os
from typing import Iterable

from keras_dp.errors import ConfigError
from keras_dp.envflags import parse_flag
from keras_dp.keras_fix import _part
from keras_dp.keras_fix._part import SWITCH, check, in_range, restore
from keras_dp.keras_fix._part import is_applied as _is_applied

log = logging.getLogger("keras_dp")

#: Parts for multi-worker strategies only.
MULTI_WORKER_PARTS = ("symbolic_build", "metric_reduction", "stock_callbacks", "chief_saving")
#: Parts for every strategy with more than one replica.
MULTI_REPLICA_PARTS = ("gradient_clipping", "optimizer_variables", "gradient_accumulation")
#: Parts for every strategy keras_dp creates.
ANY_STRATEGY_PARTS = ("exhausted_input", "sparse_gradients", "replica_xla", "tensorboard_check")
#: Parts applied when TensorFlow is imported (see `keras_dp.early`).
IMPORT_PARTS = ("early_collectives",)
#: The parts `KERAS_DP_KERAS_FIX` switches.
PARTS = MULTI_WORKER_PARTS + MULTI_REPLICA_PARTS + ANY_STRATEGY_PARTS + IMPORT_PARTS

#: Part name -> its module (every part keras_dp has; the last five are applied where they
#: act, with their own switches).
REGISTRY = {name: importlib.import_module(f"{__name__}.{name}") for name in PARTS + (
    "apply_check", "fit_step", "collective_keys", "failure_hook", "warning_filter")}
_warned = set()


def enabled_parts() -> tuple:
    """The parts `KERAS_DP_KERAS_FIX` allows: unset/`1` all, `0` none, or a list of names.

    Raises:
        ConfigError: for a name that is not a part.
    """
    value = os.environ.get(SWITCH, "1").strip().lower()
    flag = True if value in ("", "all") else False if value == "none" else parse_flag(value)
    if flag is not None:
        return PARTS if flag else ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise ConfigError(f"names no part of the Keras fix ({', '.join(unknown)})",
                          variable=SWITCH, received=value,
                          fix=f"use 1, 0 or a comma-separated list of: {', '.join(PARTS)}")
    return names


def is_applied(part: str = None) -> bool:
    """Whether `part` (default: any part of `PARTS`) is in place in this process."""
    return _is_applied(part) if part else any(_is_applied(name) for name in PARTS)


def parts_for(strategy) -> tuple:
    """The parts that matter for `strategy` (see `MULTI_WORKER_PARTS` & co.)."""
    from keras_dp.fault import worker_position

    parts = ANY_STRATEGY_PARTS
    if getattr(strategy, "num_replicas_in_sync", 1) > 1:
        parts = MULTI_REPLICA_PARTS + parts
    if worker_position(strategy)[1] > 1:
        parts = MULTI_WORKER_PARTS + parts
    return parts


def _state(name: str, allowed) -> str:
    from keras_dp import early

    if name not in PARTS:
        applied = getattr(REGISTRY[name], "is_applied", functools.partial(_is_applied, name))
        return "applied" if applied() else "not applied"
    if early.is_set_up() if name in IMPORT_PARTS else _is_applied(name):
        return "applied"
    return "allowed" if name in allowed else f"off ({SWITCH})"


def registry() -> list:
    """Every part as a dict: name, state, in_range, versions, when, upstream, switch, fixes."""
    versions = _part.installed()
    try:
        allowed = enabled_parts()
    except ConfigError:
        allowed = ()
    return [{"name": name, "state": _state(name, allowed),
             "in_range": in_range(module.PART, versions), "versions": module.PART.versions(),
             "when": module.PART.when, "upstream": module.PART.upstream,
             "switch": module.PART.switch, "fixes": module.PART.fixes}
            for name, module in REGISTRY.items()]


def describe() -> str:
    """One line for reports: the installed versions and the parts' states."""
    keras_version, tf_version = _part.installed()
    parts = registry()
    outside = [p["name"] for p in parts if not p["in_range"]]
    head = f"Keras {keras_version}, TensorFlow {tf_version}"
    if outside:
        head += " (outside the tested range for: " + ", ".join(outside) + ")"
    return head + ": " + ", ".join(f"{p['name']} ({p['state']})" for p in parts)


def apply(parts: Iterable[str] = PARTS) -> bool:
    """Installs `parts` (those `KERAS_DP_KERAS_FIX` allows; idempotent).

    A part of `IMPORT_PARTS` is only checked (`keras_dp.early` sets it up).

    Returns:
        True if any of `parts` is (now) installed.

    Raises:
        KerasDPError: an allowed part is not for the installed Keras or TensorFlow.
    """
    import keras

    parts = tuple(parts)
    if not keras.__version__.startswith("3.") or keras.backend.backend() != "tensorflow":
        return False
    allowed = enabled_parts()
    for name in parts:
        if _is_applied(name):
            continue
        part = REGISTRY[name].PART
        if name not in allowed:
            if name not in _warned:
                _warned.add(name)
                log.warning("%s: the Keras fix's part %s is off; with Keras %s %s",
                            SWITCH, name, keras.__version__, part.fixes)
            continue
        check(part)
        if name not in IMPORT_PARTS:
            REGISTRY[name].install()
            log.info("applied the Keras %s fix %s", keras.__version__, name)
    return any(_is_applied(name) for name in parts)


def remove(parts: Iterable[str] = None) -> None:
    """Restores the original Keras functions of `parts` (default: all of `PARTS`) (tests)."""
    for name in tuple(parts or PARTS):
        restore(name)
