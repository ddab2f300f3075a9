"""Keras-layer part `gradient_accumulation`: Keras' own gradient accumulation on several
replicas. See docs/gradient_accumulation.md."""

from keras_dp.keras_fix._part import Part, Target, base_optimizer, tf_optimizer, wrap

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


def install() -> None:
    """Replaces `_backend_apply_gradients` of Keras' TensorFlow optimizers."""
    import tensorflow as tf

    def _backend_apply_gradients(self, keras, grads, trainable_variables):
        context = tf.distribute.get_replica_context()   # several replicas, by merge_call:
        if not self.gradient_accumulation_steps or context is None \
                or context.num_replicas_in_sync <= 1 \
                or tf.__internal__.distribute.strategy_supports_no_merge_call():
            return keras(grads, trainable_variables)
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

    wrap(PART.name, tf_optimizer(), "_backend_apply_gradients", _backend_apply_gradients)
