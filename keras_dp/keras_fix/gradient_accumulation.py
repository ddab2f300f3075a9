"""Keras-layer part `gradient_accumulation`: Keras' own gradient accumulation on several replicas.

`keras.optimizers.Adam(..., gradient_accumulation_steps=k)` (any Keras 3
optimizer) trains on one device, but under `MirroredStrategy` or
`MultiWorkerMirroredStrategy` its first step fails with `RuntimeError:
Exception encountered when calling Cond.call(). merge_call called while
defining a new graph` (keras-team/keras#16633, open; on #17429 a maintainer
answered "not supported by tf.distribute"). `BaseOptimizer.
_backend_apply_gradients` chooses between "add this micro-batch's gradient
to the accumulators" and "update the weights" with an `ops.cond` in the
replica context, and the update branch all-reduces the gradients, which is a
`merge_call`: tf.distribute cannot synchronise the replicas from inside a
branch of a conditional they each build on their own.

Fixed by the shape Keras' own `LossScaleOptimizer` uses for its "skip the
step" conditional: the replicas meet in one `merge_call`, which costs
nothing at run time (it joins the replicas' threads while the step is
traced); the conditional is built there, in the cross-replica context, and
each of its branches runs Keras' own code on every replica again
(`call_for_each_replica`):

- not the k-th micro-batch: `_backend_increment_gradient_accumulators`, each
  replica adds its gradient to its own copy of the accumulators (Keras'
  accumulators are optimizer variables with aggregation NONE, so every
  replica keeps its local part; nothing crosses replicas);
- the k-th micro-batch: Keras' update, `(gradient + accumulator) / k` per
  replica, then clipping, weight decay and `_backend_update_step`, whose one
  all-reduce sums the replicas' accumulated gradients (the global batch's
  gradient over k micro-batches: 1 device with batch k x B), then the
  update and the accumulators' reset.

So the replicas communicate once per optimizer update, not once per
micro-batch, and the k-1 other micro-batches cost one local addition per
variable. The other parts compose: `gradient_clipping` clips the
all-reduced accumulated gradient (as one device clips its full batch's
gradient), `sparse_gradients` sees the accumulated gradient (dense, as on one
device: Keras adds the `IndexedSlices` to its dense accumulator),
`LossScaleOptimizer` wraps this optimizer as on one device (a non-finite
micro-batch is skipped, it does not count towards the k). `iterations` and
the learning-rate schedules count as on one device: Keras' `_iterations`
counts micro-batches, `optimizer.iterations` is that // k, and a
`LearningRateSchedule` is called with `_iterations` (the micro-batch count,
Keras' choice on one device too).

Where tf.distribute runs without `merge_call` (XLA on GPUs) Keras' own
conditional has no `merge_call` in it and is left alone, as are one replica
and optimizers without accumulation.
"""

from __future__ import annotations

from keras_dp.keras_fix._part import Part, Target, base_optimizer, replace, tf_optimizer

PART = Part(
    "gradient_accumulation",
    "gradient_accumulation_steps fails on several replicas (merge_call called while "
    "defining a new graph)",
    "https://github.com/keras-team/keras/issues/16633", "strategies with several replicas",
    targets=(Target(base_optimizer, "_backend_apply_gradients",
                    ("self", "grads", "trainable_variables")),
             Target(base_optimizer, "_backend_increment_gradient_accumulators",
                    ("self", "grads", "acc_grads")),
             Target(base_optimizer, "_backend_reset_gradient_accumulators"),
             Target(tf_optimizer, "_backend_update_step",
                    ("self", "grads", "trainable_variables", "learning_rate"))))


def _replica_context_with_merge_call():
    """The replica context if the step runs on several replicas that synchronise by merge_call."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        return None
    return context


def install() -> None:
    """Replaces `_backend_apply_gradients` of Keras' TensorFlow optimizers."""
    import tensorflow as tf

    optimizer_class = tf_optimizer()
    original = optimizer_class._backend_apply_gradients

    def _backend_apply_gradients(self, grads, trainable_variables):
        context = _replica_context_with_merge_call()
        if not self.gradient_accumulation_steps or context is None:
            return original(self, grads, trainable_variables)
        steps = self.gradient_accumulation_steps
        accumulators = [self._accumulated_gradients[self._get_variable_index(v)]
                        for v in trainable_variables]

        def update(grads):   # replica context: Keras' update branch
            grads = [(g + a) / steps for g, a in zip(grads, accumulators)]
            grads = self._clip_gradients(grads)
            self._apply_weight_decay(trainable_variables)
            self._backend_update_step(grads, trainable_variables, self.learning_rate)
            self._backend_reset_gradient_accumulators()

        def accumulate(grads):   # replica context: Keras' other branch
            self._backend_increment_gradient_accumulators(grads, accumulators)

        def choose(strategy, grads):   # cross-replica context
            is_update_step = (self._iterations + 1) % steps == 0

            def on_each_replica(branch):
                return lambda: strategy.extended.call_for_each_replica(branch, args=(grads,))

            tf.cond(is_update_step, on_each_replica(update), on_each_replica(accumulate))

        context.merge_call(choose, args=(list(grads),))
        if self.use_ema:   # the rest of Keras' method, unchanged
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                tf.cond((self.iterations + 1) % self.ema_overwrite_frequency == 0,
                        lambda: self._overwrite_model_variables_with_average_value(
                            self._trainable_variables),
                        lambda: None)

    replace(PART.name, optimizer_class, "_backend_apply_gradients", _backend_apply_gradients)
