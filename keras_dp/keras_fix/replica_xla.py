"""Keras-layer part `replica_xla`: XLA for each replica's forward and backward pass under a
strategy, the all-reduce and update outside it; `jit_compile="auto"` as without a strategy.
See docs/xla.md."""

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
    + (Target(tf_trainer, "_resolve_auto_jit_compile", ("self",)),))


def _stock(model, step: str) -> bool:
    return getattr(type(model), step) is getattr(_trainer().TensorFlowTrainer, step)


def _applies(model, step: str) -> bool:
    """Whether the step all-reduces across devices or workers (TPUStrategy compiles its own)."""
    strategy = model._distribute_strategy
    return (not model.run_eagerly and bool(model.jit_compile) and _stock(model, step)
            and strategy is not None and "TPU" not in type(strategy).__name__
            and (strategy.num_replicas_in_sync > 1
                 or _trainer()._collective_all_reduce_multi_worker(strategy)))


def _call(model, x, training: bool):
    return model(x, training=training) if model._call_has_training_arg else model(x)


def _train_or_test_step(model, compiled, data):
    """Keras' train_step or test_step (3.10-3.15), `compiled` doing the replica's part."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.losses import loss as loss_module

    x, y, sample_weight = _adapter().unpack_x_y_sample_weight(data)
    y_pred, loss, *grads = compiled(x, y, sample_weight)
    model._loss_tracker.update_state(
        loss_module.unscale_loss_for_distribution(loss),
        sample_weight=tf.shape(next(i for i in tree.flatten(x) if i is not None))[0])
    if grads and grads[0] is not None:
        model.optimizer.apply_gradients(zip(grads[0], model.trainable_weights))
    elif grads:
        warnings.warn("The model does not have any trainable weights.")
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

    body = {"train": replica_forward_backward, "test": replica_forward,
            "predict": lambda x: _call(model, x, False)}[kind]
    function = tf.function(body, jit_compile=True, reduce_retracing=True)
    # for inspection (tests):
    model._keras_dp_replica_xla = {**getattr(model, "_keras_dp_replica_xla", {}), kind: function}
    return function


def install() -> None:
    """Installs the part (`keras_fix.remove` puts Keras' functions back)."""
    trainer = _trainer()

    def maker(kind, replica_step):
        """Keras' `make_<kind>_function` with `jit_compile` False and an instance `<kind>_step`
        (`replica_step` around the compiled part; `_stock` still sees the class's)."""
        function, step_name = f"{kind}_function", f"{kind}_step"

        def make_function(self, keras, force=False):
            if getattr(self, function) is not None and not force:
                return getattr(self, function)
            if getattr(vars(self).get(step_name), "_keras_dp_replica_xla", False):
                delattr(self, step_name)
            if not _applies(self, step_name):
                return keras(force=force)
            step = functools.partial(replica_step, self, compiled_part(self, kind))
            step._keras_dp_replica_xla = True
            setattr(self, step_name, step)
            saved, self._jit_compile = self._jit_compile, False
            try:
                keras(force=force)
            finally:
                self._jit_compile = saved
            return getattr(self, function)

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

    owner = trainer.TensorFlowTrainer
    for kind, replica_step in (("train", _train_or_test_step), ("test", _train_or_test_step),
                               ("predict", _predict_step)):
        wrap(PART.name, owner, f"make_{kind}_function", maker(kind, replica_step))
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
