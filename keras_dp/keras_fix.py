"""Makes Keras 3 `fit`/`evaluate`/`predict` work under MultiWorkerMirroredStrategy.

Keras 3's TensorFlow trainer has two bugs that make `model.fit` crash on
every worker of a multi-worker run (keras-team/keras#20585, seen with Keras
3.15.1 and TF 2.21; MirroredStrategy and single workers are not affected):

1. `TensorFlowTrainer._maybe_symbolic_build` all-reduces a whole input batch
   (`strategy.reduce("MEAN", (x, y), axis=None)`) only to learn its shapes;
   the collective strategy cannot reduce a nested structure, so fit fails
   with `ValueError: Attempt to convert a value (PerReplica:{...})`.
2. `reduce_per_replica(..., "auto")` reduces the per-replica metric values
   with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars with
   `Invalid reduction dimension 0 for input with 0 dimensions`.

The fix replaces exactly these two functions, and only their multi-worker
branches: the symbolic build reads the shapes from this worker's first local
replica (no collective needed), and the metric mean is taken across
replicas (`axis=None`), which is what the single-worker branch computes.
Everything else is delegated to the original functions.

It is applied by `keras_dp.get_strategy()` when it creates a multi-worker
strategy, only if the installed Keras still has the faulty code (checked in
the source, so a Keras release that fixes it is left alone). Set
`KERAS_DP_KERAS_FIX=0` to turn it off, or to `symbolic_build` or
`metric_reduction` to apply one part only (the tests use this to show that
each part is needed).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Dict

log = logging.getLogger("keras_dp")

DISABLE_VARIABLE = "KERAS_DP_KERAS_FIX"
_state: Dict[str, object] = {}


def _trainer_module():
    from keras.src.backend.tensorflow import trainer

    return trainer


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def needed() -> Dict[str, bool]:
    """Which of the two bugs the installed Keras has (by reading its source).

    Returns:
        `{"symbolic_build": bool, "metric_reduction": bool}`.
    """
    trainer = _trainer_module()
    original_build = _state.get("build", trainer.TensorFlowTrainer._maybe_symbolic_build)
    original_reduce = _state.get("reduce", trainer.reduce_per_replica)
    build_src = _source(original_build)
    reduce_src = _source(original_reduce)
    return {
        "symbolic_build": "distribute_strategy.reduce(" in build_src,
        "metric_reduction": 'strategy.reduce("MEAN", v, axis=0)' in reduce_src,
    }


def describe() -> str:
    """One line for reports: which parts of the fix this Keras needs, and their state."""
    import keras

    parts = [name for name, bug in needed().items() if bug]
    if not parts:
        return f"not needed by Keras {keras.__version__}"
    allowed = enabled_parts()
    state = ("applied" if is_applied() else
             "applied when a multi-worker strategy is created" if allowed else
             f"DISABLED by {DISABLE_VARIABLE}=0")
    return f"Keras {keras.__version__} needs it ({', '.join(parts)}): {state}"


def is_applied() -> bool:
    """Whether the patch is in place in this process."""
    return bool(_state.get("applied"))


PARTS = ("symbolic_build", "metric_reduction")


def enabled_parts() -> tuple:
    """The parts `KERAS_DP_KERAS_FIX` allows: unset/`1` all, `0` none, or one part's name."""
    value = str(os.environ.get(DISABLE_VARIABLE, "1")).strip().lower()
    if value in ("0", "false", "off", "no"):
        return ()
    if value in PARTS:
        return (value,)
    return PARTS


def disabled() -> bool:
    return not enabled_parts()


def apply() -> bool:
    """Installs the fix if the installed Keras needs it. Idempotent.

    Returns:
        True if the fix is (now) installed.
    """
    if _state.get("applied"):
        return True
    if disabled():
        log.warning("%s=0: the Keras 3 multi-worker fix is off; model.fit will fail "
                    "under MultiWorkerMirroredStrategy with this Keras", DISABLE_VARIABLE)
        return False
    import keras

    if not keras.__version__.startswith("3."):
        return False
    if keras.backend.backend() != "tensorflow":
        return False
    trainer = _trainer_module()
    which = {part: bug and part in enabled_parts() for part, bug in needed().items()}
    if not any(which.values()):
        log.info("Keras %s does not need the multi-worker fix", keras.__version__)
        return False
    from keras.src import tree
    import tensorflow as tf

    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or not multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            # Keras yields (begin, end, iterator) since 3.11, (step, iterator) before.
            for *_, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda x: (strategy.experimental_local_results(x)[0]
                               if isinstance(x, tf.distribute.DistributedValues) else x),
                    batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    _state.update(build=original_build, reduce=original_reduce)
    if which["symbolic_build"]:
        trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    if which["metric_reduction"]:
        trainer.reduce_per_replica = reduce_per_replica
    _state["applied"] = True
    log.info("applied the Keras %s multi-worker fix (%s)", keras.__version__,
             ", ".join(k for k, v in which.items() if v))
    return True


def remove() -> None:
    """Restores the original Keras functions (for tests)."""
    if not _state.get("applied"):
        return
    trainer = _trainer_module()
    trainer.TensorFlowTrainer._maybe_symbolic_build = _state["build"]
    trainer.reduce_per_replica = _state["reduce"]
    _state.clear()
