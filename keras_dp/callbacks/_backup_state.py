"""What a backup holds: the model's, optimizer's and metrics' variables and Keras' global seed."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from keras_dp.callbacks import _backup_verify as verify
from keras_dp.callbacks._backup_verify import BackupError

log = logging.getLogger("keras_dp")

#: The layout of `meta.json` and the checkpoint this keras_dp writes and reads.
FORMAT = 1


def ensure_built(model) -> None:
    """Builds the optimizer's variables (to be restored); `BackupError` for an unbuilt model."""
    if not model.built:
        raise BackupError(
            "BackupAndRestore needs a built model before fit(); build it (call it on "
            "a batch, or give keras.Input) inside the strategy scope")
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def state_variables(model) -> Dict[str, List[Any]]:
    """The variables a backup holds, by group (`model`, `optimizer`, `global_seed`)."""
    from keras.src.backend.common import global_state

    state = {"model": list(model.variables)}
    if model.optimizer is not None:
        state["optimizer"] = list(model.optimizer.variables)
    seed = global_state.get_global_attribute("global_seed_generator")
    if seed is not None:
        state["global_seed"] = [seed.state]
    return state


def writer(model):
    """`(description of the variables for meta.json, write(prefix))` of the state now."""
    import tensorflow as tf

    state = state_variables(model)
    checkpoint = tf.train.Checkpoint(metrics=list(model.metrics_variables), **state)
    return verify.describe_variables(state), checkpoint.write


def read(model, prefix: str, meta: Dict[str, Any], backup_dir: str) -> None:
    """Restores the model's and optimizer's variables; `BackupError` if they cannot be."""
    import tensorflow as tf

    if meta.get("format") != FORMAT:
        raise BackupError(f"the backup {prefix!r} has format {meta.get('format')!r}; this "
                          f"keras_dp reads format {FORMAT}. Delete {backup_dir!r} "
                          f"to start over. Received: backup_dir={backup_dir}")
    state = state_variables(model)
    saved = verify.same_layout(meta.get("variables", {}), verify.describe_variables(state),
                               backup_dir)
    state = {k: v for k, v in state.items() if k in saved}
    try:
        tf.train.Checkpoint(**state).read(prefix).expect_partial()
    except (tf.errors.OpError, IndexError, ValueError) as exc:
        # Its files are exactly as written (checked): not damage.
        raise BackupError(
            f"TensorFlow cannot read the backup {prefix!r}, whose files are intact "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); was it "
            f"written by another TensorFlow version? Delete {backup_dir!r} to start "
            f"over. Received: backup_dir={backup_dir}") from None


def read_metrics(model, prefix: str, count) -> None:
    """Restores the metrics' running totals (when the metrics are the backup's `count`)."""
    import tensorflow as tf

    variables = list(model.metrics_variables)
    if len(variables) != count:
        log.warning("keras_dp: the metrics changed since the backup; their running "
                    "totals start from zero in the resumed epoch")
        return
    tf.train.Checkpoint(metrics=variables).read(prefix).expect_partial()


def float_logs(logs: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The numeric entries of Keras' logs, as floats (saved in `meta.json`)."""
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
