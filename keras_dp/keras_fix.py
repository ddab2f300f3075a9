"""Fixes for Keras 3 under `tf.distribute`: three crashes and three silent errors.

Each part replaces one Keras function, is applied only if the installed Keras
still has the faulty code (checked in its source, so a Keras release that
fixes it is left alone), and can be switched off on its own.

Multi-worker crashes (keras-team/keras#20585, Keras 3.15.1, TF 2.21); applied
when `keras_dp.get_strategy()` creates a multi-worker strategy:

1. `symbolic_build`: `TensorFlowTrainer._maybe_symbolic_build` all-reduces a
   whole input batch (`strategy.reduce("MEAN", (x, y), axis=None)`) only to
   learn its shapes; the collective strategy cannot reduce a nested
   structure, so fit fails with `ValueError: Attempt to convert a value
   (PerReplica:{...})`. Fixed: the shapes come from this worker's first local
   replica (no collective needed).
2. `metric_reduction`: `reduce_per_replica(..., "auto")` reduces per-replica
   metric values with `strategy.reduce("MEAN", v, axis=0)`, which fails on
   scalars (`Invalid reduction dimension 0 for input with 0 dimensions`).
   Fixed: the mean is taken across replicas (`axis=None`), as the
   single-worker branch computes.

Silent errors:

3. `gradient_clipping` (applied when keras_dp creates a strategy with more
   than one replica): `BaseOptimizer._backend_apply_gradients` clips the
   gradients (`clipnorm`, `global_clipnorm`, `clipvalue`) before
   `TFOptimizer._backend_update_step` all-reduces them, so each replica clips
   its own partial gradient and N replicas do not train like one device with
   the same global batch. Fixed: in a replica context with several replicas
   and clipping on, the gradients are all-reduced first and the SUM (the
   global batch's gradient, as Keras scales each replica's loss by
   1/replicas) is clipped, exactly as on one device; the optimizer's own
   all-reduce then passes these already-reduced gradients through (one
   all-reduce per step, as without clipping).
4. `exhausted_input` (applied whenever keras_dp creates a strategy): on an
   input of unknown length (a distributed dataset, `tf.data` with unknown
   cardinality) without `steps`, Keras runs the step once more after the last
   batch and stops on its `OutOfRangeError`. With `steps_per_execution=1` it
   reads the batch with `iterator.get_next()`, and the step's ops that do not
   depend on the batch's values still run: a metric's count when the batch
   shape is static, the optimizer's iteration counter. `evaluate()` then
   divides every metric by one batch too many (1.8719 instead of 1.9704 for
   19 batches, i.e. x 19/20) and each `fit` epoch adds one to
   `optimizer.iterations` (the learning-rate schedule drifts). Fixed: every
   op of the step depends on its batch (control dependencies), so nothing of
   the step runs when there is no batch.

5. `sparse_gradients` (applied whenever keras_dp creates a strategy): an
   embedding lookup's gradient is a `tf.IndexedSlices` with one slice per
   occurrence of a row, and the all-reduce of such gradients concatenates the
   replicas' slices, so a row appears once per replica that used it. Keras'
   optimizers apply non-linear element-wise ops to the slices as they are
   (Adam's `square(gradient)` for its second moment), so a duplicated row gets
   the sum of its parts' squares instead of the square of its gradient: Adam,
   AdamW, RMSprop, Adagrad... update differently from the dense gradient,
   and N replicas differ from one device by up to a whole learning-rate step
   per element from the first step (4.9e-3 with lr 5e-3 on the position
   embedding of `TransformerLM`). Fixed: the duplicate slices of each
   gradient are summed (`tf.unique` + `unsorted_segment_sum`) before the
   optimizer's update, as TF's Keras 2 optimizers did.

6-7. `stock_callbacks`, `chief_saving` (multi-worker; in their own modules
   `stock_callbacks.py`, `dropin_saving.py`): Keras' file-writing callbacks
   and `model.save()` & co. write once, from the chief (atomically).
8. `optimizer_variables` (applied when keras_dp creates a strategy with more
   than one replica): a custom loop's first `optimizer.apply()` inside
   `strategy.run` in a `tf.function` creates a stateful optimizer's slots while
   the step is traced and fails (keras-team/keras#23085); the slots are created
   in `tf.init_scope()` as the upstream fix does. See
   `keras_dp/optimizer_variables.py`.
9. `gradient_accumulation` (several replicas; `accumulation.py`): Keras'
   `gradient_accumulation_steps` fails under tf.distribute (keras#16633); it
   now trains like one device with k times the batch, one all-reduce per update.
10. `tensorboard_check` (every strategy; `tensorboard_check.py`):
   `keras.callbacks.TensorBoard` without the tensorboard package fails at its
   construction with the fix, not after the first epoch.

`KERAS_DP_KERAS_FIX`: unset or `1` allows every part, `0` none, or a
comma-separated list of part names allows those (the tests use this to show
that each part is needed).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Dict, Iterable

from keras_dp import replica_xla
from keras_dp.errors import ConfigError

log = logging.getLogger("keras_dp")

DISABLE_VARIABLE = "KERAS_DP_KERAS_FIX"

#: Parts for multi-worker strategies only.
MULTI_WORKER_PARTS = ("symbolic_build", "metric_reduction", "stock_callbacks", "chief_saving")
#: Parts for every strategy with more than one replica.
MULTI_REPLICA_PARTS = ("gradient_clipping", "optimizer_variables", "gradient_accumulation")
#: Parts for every strategy keras_dp creates.
ANY_STRATEGY_PARTS = ("exhausted_input", "sparse_gradients", "replica_xla", "tensorboard_check")
#: Parts applied when TensorFlow is imported (see `keras_dp.early`).
IMPORT_PARTS = ("early_collectives",)
PARTS = MULTI_WORKER_PARTS + MULTI_REPLICA_PARTS + ANY_STRATEGY_PARTS + IMPORT_PARTS

_CONSEQUENCE = {
    "symbolic_build": "model.fit fails under MultiWorkerMirroredStrategy",
    "metric_reduction": "model.fit fails under MultiWorkerMirroredStrategy",
    "gradient_clipping": "clipnorm/global_clipnorm/clipvalue clip each replica's partial "
                         "gradient (N replicas differ from one device)",
    "exhausted_input": "evaluate() without steps on an input of unknown length averages in "
                       "one empty batch, and fit adds an optimizer step per epoch",
    "optimizer_variables": "a custom loop's first optimizer.apply() inside strategy.run in a "
                           "tf.function fails (You must feed a value for placeholder tensor "
                           "'cond/.../Placeholder'; keras-team/keras#23085)",
    "sparse_gradients": "Adam-like optimizers square an embedding gradient's duplicate slices "
                        "one by one (N replicas differ from one device)",
    "early_collectives": "a multi-worker program that makes a tensor or dataset before "
                         "keras_dp.scope() cannot get its strategy",
    "stock_callbacks": "every worker's ModelCheckpoint/BackupAndRestore/TensorBoard/CSVLogger "
                       "writes the same files (BackupAndRestore: BlockingIOError)",
    "chief_saving": "model.save/save_weights/export on every worker write the same path",
    "replica_xla": replica_xla.CONSEQUENCE,
    "gradient_accumulation": "gradient_accumulation_steps fails on several replicas "
                             "(merge_call called while defining a new graph)",
    "tensorboard_check": "keras.callbacks.TensorBoard without tensorboard fails after the "
                         "first epoch (TBNotInstalledError)",
}

_MISSING = object()   # the owner class did not define the replaced attribute itself
_applied: Dict[str, list] = {}   # part -> [(owner, name, original or _MISSING), ...]
_warned = set()
_pending = threading.local()   # gradients already all-reduced by the clipping part


def _trainer_module():
    from keras.src.backend.tensorflow import trainer

    return trainer


def _optimizer_classes():
    from keras.src.backend.tensorflow.optimizer import TFOptimizer
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    return TFOptimizer, BaseOptimizer


def _module(name: str):
    """A part's own module (`keras_dp.<name>`)."""
    import importlib

    return importlib.import_module(f"keras_dp.{name}")


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _original(part: str, owner, name: str):
    """The Keras function a part replaces (the saved one once the part is applied)."""
    for saved_owner, saved_name, original in _applied.get(part, ()):
        if saved_owner is owner and saved_name == name and original is not _MISSING:
            return original
    return getattr(owner, name)


def needed() -> Dict[str, bool]:
    """Which of the faults the installed Keras has (by reading its source).

    Returns:
        `{part name: bool}` for every name in `PARTS`.
    """
    from keras_dp import accumulation, early, optimizer_variables, tensorboard_check

    trainer = _trainer_module()
    tf_optimizer, base_optimizer = _optimizer_classes()
    build_src = _source(_original("symbolic_build", trainer.TensorFlowTrainer,
                                  "_maybe_symbolic_build"))
    reduce_src = _source(_original("metric_reduction", trainer, "reduce_per_replica"))
    apply_src = _source(base_optimizer._backend_apply_gradients)
    update_src = _source(tf_optimizer._backend_update_step)
    make_src = _source(_original("exhausted_input", trainer.TensorFlowTrainer,
                                 "_make_function"))
    return {
        "symbolic_build": "distribute_strategy.reduce(" in build_src,
        "metric_reduction": 'strategy.reduce("MEAN", v, axis=0)' in reduce_src,
        # Clipping in the replica context, then the all-reduce in the update.
        "gradient_clipping": ("self._clip_gradients(grads)" in apply_src
                              and "_all_reduce_sum_gradients" in update_src),
        # The one-step path reads the batch without an Optional.
        "exhausted_input": "one_step_on_data(iterator.get_next())" in make_src,
        "optimizer_variables": optimizer_variables.needed(
            tf_optimizer, _original("optimizer_variables", tf_optimizer, "add_variable")),
        # The update step gets the gradient's slices as they are.
        "sparse_gradients": "self.update_step(grad, var, learning_rate)" in _source(
            _original("sparse_gradients", tf_optimizer, "_distributed_tf_update_step")),
        "early_collectives": early.needed(),
        "stock_callbacks": _module("stock_callbacks").needed(
            lambda owner, name: _original("stock_callbacks", owner, name)),
        "chief_saving": _module("dropin_saving").needed(
            lambda owner, name: _original("chief_saving", owner, name)),
        # The whole multi-replica step in one XLA function; "auto" off under strategies.
        "replica_xla": replica_xla.needed(
            make_src, _source(trainer.base_trainer.Trainer._resolve_auto_jit_compile)),
        "gradient_accumulation": accumulation.needed(
            lambda owner, name: _original("gradient_accumulation", owner, name)),
        "tensorboard_check": tensorboard_check.needed(
            lambda owner, name: _original("tensorboard_check", owner, name)),
    }


def enabled_parts() -> tuple:
    """The parts `KERAS_DP_KERAS_FIX` allows: unset/`1` all, `0` none, or a list of names.

    Raises:
        ConfigError: for a name that is not a part.
    """
    value = str(os.environ.get(DISABLE_VARIABLE, "1")).strip().lower()
    if value in ("1", "true", "on", "yes", "all", ""):
        return PARTS
    if value in ("0", "false", "off", "no", "none"):
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise ConfigError(f"names no part of the Keras fix ({', '.join(unknown)})",
                          variable=DISABLE_VARIABLE, received=value,
                          fix=f"use 1, 0 or a comma-separated list of: {', '.join(PARTS)}")
    return names


def disabled() -> bool:
    return not enabled_parts()


def is_applied(part: str = None) -> bool:
    """Whether `part` (default: any part) is in place in this process."""
    return part in _applied if part else bool(_applied)


def parts_for(strategy) -> tuple:
    """The parts that matter for `strategy` (see the module docstring)."""
    from keras_dp.fault import worker_position

    parts = ANY_STRATEGY_PARTS
    if getattr(strategy, "num_replicas_in_sync", 1) > 1:
        parts = MULTI_REPLICA_PARTS + parts
    if worker_position(strategy)[1] > 1:
        parts = MULTI_WORKER_PARTS + parts
    return parts


def describe() -> str:
    """One line for reports: which parts this Keras needs, and their state."""
    import keras

    bugs = [name for name, bug in needed().items() if bug]
    if not bugs:
        return f"not needed by Keras {keras.__version__}"
    allowed = enabled_parts()
    when = {**{p: "multi-worker strategies" for p in MULTI_WORKER_PARTS},
            **{p: "strategies with several replicas" for p in MULTI_REPLICA_PARTS},
            **{p: "every keras_dp strategy" for p in ANY_STRATEGY_PARTS},
            "early_collectives": "multi-worker environments, when TensorFlow is imported"}

    def state(part):
        from keras_dp import early

        if part in _applied or (part == early.PART and early.is_set_up()):
            return "applied"
        if part not in allowed:
            return f"DISABLED by {DISABLE_VARIABLE}"
        return f"applied for {when[part]}"

    return (f"Keras {keras.__version__} needs it: "
            + ", ".join(f"{part} ({state(part)})" for part in bugs))


def apply(parts: Iterable[str] = PARTS) -> bool:
    """Installs those of `parts` the installed Keras needs (and `KERAS_DP_KERAS_FIX` allows).

    Idempotent; called by `keras_dp.get_strategy()` with `parts_for(strategy)`.

    Returns:
        True if any of `parts` is (now) installed.
    """
    import keras

    parts = tuple(parts)
    if not keras.__version__.startswith("3.") or keras.backend.backend() != "tensorflow":
        return False
    allowed = enabled_parts()
    bugs = needed()
    for part in parts:
        if part in _applied or not bugs.get(part) or part not in _INSTALL:
            continue  # (IMPORT_PARTS are set up by keras_dp.early)
        if part not in allowed:
            if part not in _warned:
                _warned.add(part)
                log.warning("%s: the Keras fix's part %s is off; with Keras %s %s",
                            DISABLE_VARIABLE, part, keras.__version__, _CONSEQUENCE[part])
            continue
        _INSTALL[part]()
        log.info("applied the Keras %s fix %s", keras.__version__, part)
    return any(part in _applied for part in parts)


def remove(parts: Iterable[str] = None) -> None:
    """Restores the original Keras functions of `parts` (default: all) (for tests)."""
    for part in tuple(parts or PARTS):
        for owner, name, original in reversed(_applied.pop(part, [])):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def _replace(part: str, owner, name: str, function) -> None:
    """Sets `owner.name = function`, remembering what to restore."""
    _applied.setdefault(part, []).append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, function)


# -- the parts ------------------------------------------------------------------

def _install_symbolic_build():
    import tensorflow as tf
    from keras.src import tree

    trainer = _trainer_module()
    original = trainer.TensorFlowTrainer._maybe_symbolic_build
    multi_worker = trainer._collective_all_reduce_multi_worker

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or not multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
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

    _replace("symbolic_build", trainer.TensorFlowTrainer, "_maybe_symbolic_build",
             _maybe_symbolic_build)


def _install_metric_reduction():
    from keras.src import tree

    trainer = _trainer_module()
    original = trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    _replace("metric_reduction", trainer, "reduce_per_replica", reduce_per_replica)


def _clips(optimizer) -> bool:
    return any((getattr(optimizer, name, None) or 0) > 0
               for name in ("clipnorm", "global_clipnorm", "clipvalue"))


def _install_gradient_clipping():
    import tensorflow as tf

    tf_optimizer, base_optimizer = _optimizer_classes()
    original_clip = tf_optimizer._clip_gradients   # BaseOptimizer's, inherited
    original_reduce = tf_optimizer._all_reduce_sum_gradients

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        present = [g for g in grads if g is not None]
        if not _clips(self) or context is None or context.num_replicas_in_sync <= 1 \
                or not present:
            return original_clip(self, grads)
        # The global batch's gradient (each replica's loss is already scaled
        # by 1/replicas), clipped as one device would clip it.
        summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
        clipped = original_clip(self, [None if g is None else next(summed) for g in grads])
        reduced = getattr(_pending, "reduced", {})
        reduced[id(self)] = [g for g in clipped if g is not None]
        _pending.reduced = reduced
        return clipped

    def _all_reduce_sum_gradients(self, grads_and_vars):
        grads_and_vars = list(grads_and_vars)
        done = getattr(_pending, "reduced", {}).pop(id(self), None)
        if done is not None and all(g is None or any(g is d for d in done)
                                    for g, _ in grads_and_vars):
            return grads_and_vars  # already all-reduced (and clipped) above
        return original_reduce(self, grads_and_vars)

    _replace("gradient_clipping", tf_optimizer, "_clip_gradients", _clip_gradients)
    _replace("gradient_clipping", tf_optimizer, "_all_reduce_sum_gradients",
             _all_reduce_sum_gradients)


def _install_exhausted_input():
    import tensorflow as tf

    trainer = _trainer_module()
    original = trainer.TensorFlowTrainer._make_function

    def creates_without_dependencies(next_creator, **kwargs):
        # Variables a first step creates (an optimizer built lazily) are lifted
        # out of the function (XLA needs that): their initial values must not
        # depend on the batch.
        with tf.control_dependencies(None):
            return next_creator(**kwargs)

    def _make_function(self, step_function):
        def step_after_its_batch(data):
            batch = [t for t in tf.nest.flatten(data, expand_composites=True)
                     if isinstance(t, tf.Tensor)]
            with tf.control_dependencies(batch), \
                    tf.variable_creator_scope(creates_without_dependencies):
                return step_function(data)

        return original(self, step_after_its_batch)

    _replace("exhausted_input", trainer.TensorFlowTrainer, "_make_function", _make_function)


def deduplicate(gradient):
    """Sums the slices of an `IndexedSlices` gradient that share a row.

    Args:
        gradient: A gradient (anything else than `tf.IndexedSlices` is
            returned as it is).

    Returns:
        An `IndexedSlices` with unique indices and the same dense value.
    """
    import tensorflow as tf

    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.size(rows))
    return tf.IndexedSlices(values, rows, gradient.dense_shape)


def _install_sparse_gradients():
    tf_optimizer, _ = _optimizer_classes()

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        def update(var, grad, learning_rate):
            return self.update_step(deduplicate(grad), var, learning_rate)

        for grad, var in grads_and_vars:
            distribution.extended.update(var, update, args=(grad, learning_rate), group=False)

    _replace("sparse_gradients", tf_optimizer, "_distributed_tf_update_step",
             _distributed_tf_update_step)


def _install_optimizer_variables():
    from keras_dp import optimizer_variables

    tf_optimizer, _ = _optimizer_classes()
    original = _original("optimizer_variables", tf_optimizer, "add_variable")
    _replace("optimizer_variables", tf_optimizer, "add_variable",
             optimizer_variables.make_add_variable(original))


_INSTALL = {
    "symbolic_build": _install_symbolic_build,
    "metric_reduction": _install_metric_reduction,
    "gradient_clipping": _install_gradient_clipping,
    "exhausted_input": _install_exhausted_input,
    "sparse_gradients": _install_sparse_gradients,
    "stock_callbacks": lambda: _module("stock_callbacks").install(_replace),
    "chief_saving": lambda: _module("dropin_saving").install(_replace),
    "optimizer_variables": _install_optimizer_variables,
    "replica_xla": lambda: replica_xla.install(
        lambda owner, name, function: _replace("replica_xla", owner, name, function)),
    "gradient_accumulation": lambda: _module("accumulation").install(_replace),
    "tensorboard_check": lambda: _module("tensorboard_check").install(_replace),
}

