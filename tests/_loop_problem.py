"""Custom training loops over the fixed problem of `_problem.py`.

`train_tape` is the GradientTape recipe written with keras_dp's loop API,
`train_with_step` uses `keras_dp.train_step`, and `train_naive` is the
classic hand-written mistake: each worker computes gradients on its own
share of the batch, divides them by the number of workers and applies them
without any all-reduce.
"""

import numpy as np

import _problem


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def loss_fn():
    import keras

    return keras.losses.MeanSquaredError(reduction=None)


def train_tape(strategy, steps=_problem.STEPS, dataset=None):
    """ctx.run + compute_loss + apply_gradients in the replica context.

    Returns:
        (model, weights, the global mean loss of every step).
    """
    import tensorflow as tf

    from keras_dp import loop

    model, optimizer = fresh_model(strategy)
    per_example = loss_fn()

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = loop.compute_loss(per_example(y, model(x, training=True)), model=model)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(batch):
        return loop.reduce(strategy.run(replica_step, args=tuple(batch)), strategy=strategy)

    data = loop.distribute(dataset or _problem.distributed_dataset(strategy, steps),
                           strategy=strategy)
    losses = [float(step(batch)) for batch, _ in zip(data, range(steps))]
    return model, _weights(model), losses


def train_with_step(strategy, steps=_problem.STEPS, **options):
    """keras_dp.train_step; returns (model, weights, logs of the last step)."""
    import keras

    from keras_dp import loop

    with strategy.scope():
        model = _problem.build_model()
        optimizer = options.pop("optimizer", None) or keras.optimizers.SGD(_problem.LEARNING_RATE)
        metrics = [keras.metrics.MeanAbsoluteError(name="mae")]
    step = loop.train_step(model, optimizer, loss_fn(), metrics=metrics, strategy=strategy,
                           **options)
    logs = {}
    for batch, _ in zip(loop.distribute(_problem.distributed_dataset(strategy, steps),
                                        strategy=strategy), range(steps)):
        logs = step(batch)
    return model, _weights(model), {k: float(v) for k, v in logs.items()}


def local_batches(worker, num_workers, steps=_problem.STEPS):
    """Worker `worker`'s rows of every global batch (as `_problem` splits them)."""
    x, y = _problem.data(steps)
    per_worker = _problem.GLOBAL_BATCH // num_workers
    for k in range(steps):
        start = k * _problem.GLOBAL_BATCH + worker * per_worker
        yield x[start:start + per_worker], y[start:start + per_worker]


def fresh_model(strategy):
    """`_problem`'s model and an SGD optimizer, created under `strategy`."""
    import keras

    with strategy.scope():
        return _problem.build_model(), keras.optimizers.SGD(_problem.LEARNING_RATE)


def local_mean_gradients(model, x, y, divide_by=1):
    """Gradients of the loss averaged over the LOCAL batch (the mistake), / divide_by."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x, training=True)))
    return [g / divide_by for g in tape.gradient(loss, model.trainable_variables)]


def train_naive(strategy, worker, num_workers, steps=_problem.STEPS, compiled=False):
    """The naive recipe: local gradients / num_workers, applied with no all-reduce."""
    import tensorflow as tf

    model, optimizer = fresh_model(strategy)

    def step(x, y):
        grads = local_mean_gradients(model, x, y, divide_by=num_workers)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    step = tf.function(step) if compiled else step
    for x, y in local_batches(worker, num_workers, steps):
        step(x, y)
    return model, _weights(model)


def train_local_mean(strategy, steps=_problem.STEPS):
    """Inside the replica context, but with a loss averaged over the local batch."""
    import tensorflow as tf

    model, optimizer = fresh_model(strategy)

    def replica_step(x, y):
        grads = local_mean_gradients(model, x, y)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def step(batch):
        strategy.run(replica_step, args=batch)

    for batch, _ in zip(_problem.distributed_dataset(strategy, steps), range(steps)):
        step(batch)
    return model, _weights(model)


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
