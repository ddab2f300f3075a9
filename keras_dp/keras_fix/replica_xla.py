"""Keras-layer part `replica_xla`: XLA for each replica's forward and backward pass under a
strategy, the all-reduce and update outside it; `jit_compile="auto"` as without a strategy.
See docs/xla.md.
"""

import contextlib
import functools
import warnings

from keras_dp.keras_fix._part import Part, Target, lazy, tf_trainer, trainer as _trainer, wrap

_adapter = lazy("keras.src.trainers.data_adapters.data_adapter_utils")

PART = Part(
    "replica_xla",
    "jit_compile=True fails with several CPU replicas or workers (Keras compiles the "
    "all-reduce and the update into the step), and jit_compile='auto' is off under every "
    "strategy", "none filed: Keras' jit_compile='auto' rule (docs/xla.md)",
    "every keras_dp strategy",
    targets=tuple(Target(tf_trainer, name, ("self", "force")) for name in (
        "make_train_function", "make_test_function", "make_predict_function"))
    + (Target(tf_trainer, "_resolve_auto_jit_compile", ("self",)),
       Target(tf_trainer, "_make_function", ("self", "step_function"))))


def _splits(strategy) -> bool:
    """Whether the step all-reduces across devices or workers (TPUStrategy compiles its own)."""
    return strategy is not None and "TPU" not in type(strategy).__name__ and (
        strategy.num_replicas_in_sync > 1
        or _trainer()._collective_all_reduce_multi_worker(strategy))


def _stock(model, step: str) -> bool:
    return getattr(type(model), step) is getattr(_trainer().TensorFlowTrainer, step)


def _applies(model, step: str) -> bool:
    return (not model.run_eagerly and bool(model.jit_compile) and _stock(model, step)
            and _splits(model._distribute_strategy))


@contextlib.contextmanager
def _outer_without_xla(model):
    """Keras traces the step function with `jit_compile=self.jit_compile`: False meanwhile."""
    saved = model._jit_compile
    model._jit_compile = False
    try:
        yield
    finally:
        model._jit_compile = saved


def _call(model, x, training: bool):
    return model(x, training=training) if model._call_has_training_arg else model(x)


def _track_loss(model, x, loss):
    import tensorflow as tf
    from keras.src import tree
    from keras.src.losses import loss as loss_module

    model._loss_tracker.update_state(
        loss_module.unscale_loss_for_distribution(loss),
        sample_weight=tf.shape(next(i for i in tree.flatten(x) if i is not None))[0])


def _train_step(model, compiled, data):
    """Keras' train_step (3.10-3.15) with `compiled` doing the forward and backward pass."""
    x, y, sample_weight = _adapter().unpack_x_y_sample_weight(data)
    y_pred, loss, grads = compiled(x, y, sample_weight)
    _track_loss(model, x, loss)
    if grads is not None:
        model.optimizer.apply_gradients(zip(grads, model.trainable_weights))
    else:
        warnings.warn("The model does not have any trainable weights.")
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _test_step(model, compiled, data):
    """Keras' test_step (3.10-3.15) with `compiled` doing the forward pass and loss."""
    x, y, sample_weight = _adapter().unpack_x_y_sample_weight(data)
    y_pred, loss = compiled(x, y, sample_weight)
    _track_loss(model, x, loss)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _predict_step(model, compiled, data):
    """Keras' predict_step (3.10-3.15) with `compiled` doing the forward pass."""
    return compiled(_adapter().unpack_x_y_sample_weight(data)[0])


def compiled_part(model, kind: str):
    """The `tf.function(jit_compile=True)` one replica runs for `kind` (train, test, predict)."""
    import tensorflow as tf

    def replica_forward_backward(x, y, sample_weight):   # what XLA compiles of train_step
        with tf.GradientTape() as tape:
            y_pred = _call(model, x, True)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                       training=True)
            scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        weights = model.trainable_weights
        return y_pred, loss, tape.gradient(scaled, weights) if weights else None

    def replica_forward(x, y, sample_weight):   # what XLA compiles of test_step
        y_pred = _call(model, x, False)
        return y_pred, model._compute_loss(x=x, y=y, y_pred=y_pred,
                                           sample_weight=sample_weight, training=False)

    def replica_predict(x):
        return _call(model, x, False)

    body = {"train": replica_forward_backward, "test": replica_forward,
            "predict": replica_predict}[kind]
    function = tf.function(body, jit_compile=True, reduce_retracing=True)
    if not hasattr(model, "_keras_dp_replica_xla"):
        model._keras_dp_replica_xla = {}
    model._keras_dp_replica_xla[kind] = function   # for inspection (tests)
    return function


def install() -> None:
    """Installs the part (`keras_fix.remove` puts Keras' functions back)."""
    trainer = _trainer()

    def maker(kind, replica_step):
        """Keras' `make_<kind>_function`, with `replica_step` around the compiled part."""
        attribute = f"{kind}_function"

        def make_function(self, keras, force=False):
            if getattr(self, attribute) is not None and not force:
                return getattr(self, attribute)
            if not _applies(self, f"{kind}_step"):
                return keras(force=force)
            step = functools.partial(replica_step, self, compiled_part(self, kind))
            with _outer_without_xla(self):
                setattr(self, attribute, self._make_function(step))
            return getattr(self, attribute)

        return make_function

    def _resolve_auto_jit_compile(self, keras):
        import tensorflow as tf

        strategy = self._distribute_strategy
        if strategy is None or "TPU" in type(strategy).__name__ \
                or not _stock(self, "train_step") or not _stock(self, "test_step"):
            return keras()
        if not any(d.device_type != "CPU" for d in tf.config.list_physical_devices()):
            return False   # Keras' rule: no XLA by default on CPU-only machines
        return bool(trainer.base_trainer.model_supports_jit(self))

    def make_predict_function(self, keras, force=False):
        # Keras' own, with an instance `predict_step` (the replica's compiled forward pass)
        # standing in for the class's method, which `_stock` still sees.
        if self.predict_function is not None and not force:
            return self.predict_function
        if getattr(vars(self).get("predict_step"), "_keras_dp_replica_xla", False):
            del self.predict_step
        if not _applies(self, "predict_step"):
            return keras(force=force)
        step = functools.partial(_predict_step, self, compiled_part(self, "predict"))
        step._keras_dp_replica_xla = True
        self.predict_step = step
        with _outer_without_xla(self):
            keras(force=force)
        return self.predict_function

    owner = trainer.TensorFlowTrainer
    wrap(PART.name, owner, "make_train_function", maker("train", _train_step))
    wrap(PART.name, owner, "make_test_function", maker("test", _test_step))
    wrap(PART.name, owner, "make_predict_function", make_predict_function)
    wrap(PART.name, owner, "_resolve_auto_jit_compile", _resolve_auto_jit_compile)


def describe(num_gpus: int, enabled: bool) -> str:
    """What XLA does under keras_dp here (`keras-dp env`), with `num_gpus` GPUs visible and
    the part allowed (`enabled`) or not."""
    if not enabled:
        return ("Keras' own: jit_compile='auto' off under strategies; jit_compile=True "
                f"compiles the whole step (part {PART.name} switched off); keras-dp train: off "
                "with several CPU replicas")
    auto = "on (GPUs visible)" if num_gpus else "off (CPU only, as Keras decides)"
    return (f"jit_compile='auto' {auto}; jit_compile=True with several replicas or workers "
            "compiles each replica's forward and backward pass, all-reduce and update "
            f"outside XLA (part {PART.name}); keras-dp train: on")
