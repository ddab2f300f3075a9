"""Training `_problem`'s model with Keras' gradient accumulation, and counting all-reduces.

One device with global batch 2B equals any strategy with global batch B and
`gradient_accumulation_steps=2` on the same rows: micro-batches 2k and 2k+1
of size B are the rows of batch k of size 2B.
"""

import numpy as np

import _problem

MICRO_BATCH = _problem.GLOBAL_BATCH      # global batch of one micro-batch
ACCUMULATE = 2
MICRO_STEPS = 8                         # micro-batches per run: 4 optimizer updates


def arrays():
    return _problem.data(MICRO_STEPS, MICRO_BATCH)


def optimizer(accumulate=None, clipping=None, schedule=False, loss_scale=False):
    """Adam (its update is not linear in the gradient, so a wrong batch shows)."""
    import keras

    rate = (keras.optimizers.schedules.ExponentialDecay(0.05, 1, 0.8) if schedule else 0.05)
    adam = keras.optimizers.Adam(rate, gradient_accumulation_steps=accumulate,
                                 **(clipping or {}))
    return keras.optimizers.LossScaleOptimizer(adam) if loss_scale else adam


def train(strategy, accumulate=ACCUMULATE, global_batch=None, steps_per_epoch=True, epochs=1,
          **options):
    """Fits a fresh model on `arrays()`: by default micro-batches of MICRO_BATCH with
    `accumulate`, else batches of MICRO_BATCH * ACCUMULATE. Returns (model, weights)."""
    global_batch = global_batch or (MICRO_BATCH if accumulate else MICRO_BATCH * ACCUMULATE)
    steps = MICRO_STEPS * MICRO_BATCH // global_batch
    with strategy.scope():
        model = _problem.build_model()
        model.compile(optimizer=optimizer(accumulate, **options), loss="mse")
    dataset = _problem.distributed_dataset(strategy, steps, global_batch, arrays=arrays())
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps if steps_per_epoch else None,
              verbose=0, shuffle=False)
    return model, [np.array(w) for w in model.get_weights()]


def count_all_reduces(strategy, monkeypatch):
    """Makes every batch all-reduce of `strategy` add 1 to the returned variable when it RUNS.

    The count is an op next to the all-reduce in the traced step, so an
    all-reduce inside a branch not taken is not counted.
    """
    import tensorflow as tf

    with tf.init_scope():
        counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    extended = strategy.extended
    batch_reduce_to = extended.batch_reduce_to

    def counting(reduce_op, value_destination_pairs, options=None):
        with tf.control_dependencies([counter.assign_add(1)]):
            return batch_reduce_to(reduce_op, value_destination_pairs, options)

    monkeypatch.setattr(extended, "batch_reduce_to", counting)
    return counter
