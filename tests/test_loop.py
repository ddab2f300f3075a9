"""Custom training loops (keras_dp.loop) in one process: equivalence, loss scaling, checks.

Several replicas come from the pytest process's logical CPUs. The 2-worker
and mpirun runs are in test_loop_multiworker.py.
"""

import types
import warnings

import numpy as np
import pytest

import _loop_problem as lp
import _problem
import keras_dp
from keras_dp.cluster import resolve_cluster

SINGLE = resolve_cluster({})


@pytest.fixture(scope="module")
def reference(tf):
    """model.fit on one device with the global batch."""
    _, weights = _problem.train(tf.distribute.get_strategy())
    return weights


@pytest.fixture(scope="module")
def two_replicas(tf):
    return keras_dp.get_strategy("mirrored", cluster=SINGLE, devices=["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="module")
def checks_installed(tf):
    from keras_dp import keras_fix
    from keras_dp.keras_fix import apply_check

    apply_check.install()
    yield
    keras_fix.remove(["apply_check"])


def strategy_for(tf, replicas):
    if replicas == 1:
        return tf.distribute.get_strategy()
    return keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                 devices=[f"/cpu:{i}" for i in range(replicas)])


@pytest.mark.parametrize("recipe,replicas", [
    ("tape", 1), ("tape", 2), ("tape_plain_dataset", 2), ("train_step", 1),
    ("train_step", 2), ("train_step_xla", 2)])
def test_custom_loop_matches_one_device_fit(tf, reference, checks_installed, recipe, replicas):
    """The GradientTape loop and train_step give model.fit's weights (1 device, batch B)."""
    strategy = strategy_for(tf, replicas)
    if recipe == "tape":
        _, weights, losses = lp.train_tape(strategy)
        assert losses[-1] < losses[0]
    elif recipe == "tape_plain_dataset":
        x, y = _problem.data()
        plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(_problem.GLOBAL_BATCH)
        _, weights, _ = lp.train_tape(strategy, dataset=plain)
    else:
        _, weights, logs = lp.train_with_step(strategy, jit_compile=recipe.endswith("xla"))
        assert set(logs) == {"loss", "mae"} and np.isfinite(logs["loss"])
    assert lp.max_diff(weights, reference) <= 1e-5
    assert lp.max_diff(weights, _problem.initial_weights()) > 0.05


def test_local_mean_loss_diverges(tf, reference, two_replicas):
    """The classic mistake, a mean over the local batch, doubles the gradients on 2 replicas
    (README: the weights end 0.305 from the correct ones)."""
    _, weights = lp.train_local_mean(two_replicas)
    assert lp.max_diff(weights, reference) > 0.1


def test_compute_loss_refuses_a_reduced_loss(tf):
    with pytest.raises(keras_dp.LossReductionError, match="got a scalar loss") as caught:
        keras_dp.compute_loss(tf.constant(0.5))
    assert isinstance(caught.value, ValueError)
    assert "reduction=None" in str(caught.value)
    assert str(caught.value).endswith("Received: per_example_loss.shape=()")


def test_train_step_refuses_a_loss_function_that_averages(tf, two_replicas):
    model, optimizer = lp.fresh_model(two_replicas)
    step = keras_dp.train_step(model, optimizer, lambda y, p: tf.reduce_mean(tf.square(y - p)),
                               strategy=two_replicas, check_data=False)
    batch = next(iter(_problem.distributed_dataset(two_replicas)))
    with pytest.raises(keras_dp.LossReductionError, match="num_replicas times too large"):
        step(batch)


def test_compute_loss_scales_by_the_global_batch(tf, two_replicas):
    """Summed over replicas: the global mean, rank-2 losses as Keras averages them,
    regularization counted once, and the true global batch for uneven batches."""
    per_token = np.arange(24, dtype="float32").reshape(8, 3)  # replica r gets rows 4r..4r+3
    weights = np.array([1, 0, 1, 1, 0.5, 1, 1, 1], dtype="float32")
    values = two_replicas.experimental_distribute_values_from_function(
        lambda ctx: (per_token[4 * ctx.replica_id_in_sync_group:][:4],
                     weights[4 * ctx.replica_id_in_sync_group:][:4]))

    def replica_fn(losses, sample_weight):
        plain = keras_dp.compute_loss(losses)
        weighted = keras_dp.compute_loss(losses, sample_weight=sample_weight,
                                         model=types.SimpleNamespace(losses=[tf.constant(3.0)]))
        return plain, weighted

    plain, weighted = [float(v) for v in keras_dp.loop.reduce(
        two_replicas.run(replica_fn, args=values), strategy=two_replicas)]
    assert plain == pytest.approx(per_token.mean())  # Keras's "sum_over_batch_size"
    assert weighted == pytest.approx((per_token * weights[:, None]).mean() + 3.0)

    # A short last batch: 3 and 1 examples; the global batch is 4, not 2 * 3.
    uneven = two_replicas.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([1.0, 2.0, 3.0]) if ctx.replica_id_in_sync_group == 0
        else tf.constant([10.0]))
    total = keras_dp.loop.reduce(two_replicas.run(keras_dp.compute_loss, args=(uneven,)),
                                 strategy=two_replicas)
    assert float(total) == pytest.approx(16.0 / 4)


def test_compute_loss_outside_the_replica_context_is_explained(tf, two_replicas):
    with two_replicas.scope():
        with pytest.raises(keras_dp.LossReductionError, match="cross-replica context"):
            keras_dp.compute_loss(tf.ones([4]))
        assert float(keras_dp.compute_loss(tf.ones([4]), global_batch_size=8)) == 0.5


def test_reduce_rejects_unknown_op(tf, two_replicas):
    with pytest.raises(keras_dp.ConfigError, match="Received: op=max"):
        keras_dp.loop.reduce(tf.constant(1.0), "max", strategy=two_replicas)


@pytest.mark.parametrize("case,warns", [
    ("sharded", False), ("same_data", True), ("constant", False)])
def test_same_data_on_every_replica_is_detected(tf, two_replicas, case, warns):
    x, y = _problem.data()
    if case == "sharded":
        data = _problem.distributed_dataset(two_replicas)
    else:
        arrays = (np.ones_like(x), np.ones_like(y)) if case == "constant" else (x, y)

        def data(input_context):
            # One pipeline feeds both local replicas in turn; repeating every
            # batch gives both the same rows, as an unsharded pipeline does
            # across workers (test_loop_multiworker.py has that case).
            batches = tf.data.Dataset.from_tensor_slices(arrays).batch(
                input_context.get_per_replica_batch_size(_problem.GLOBAL_BATCH))
            return batches.flat_map(lambda *b: tf.data.Dataset.from_tensors(b).repeat(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(iter(keras_dp.distribute(data, strategy=two_replicas)))
    messages = [str(w.message) for w in caught if w.category is keras_dp.SameDataWarning]
    assert bool(messages) == warns, messages
    if warns:
        assert messages[0].startswith("every replica received the same batch (2 replicas")
        assert "input_context.num_input_pipelines" in messages[0]


def test_apply_gradients_outside_the_replica_context_in_one_process_is_allowed(
        tf, reference, checks_installed, two_replicas):
    """In one process it is correct (every mirror gets the same update), so no error."""
    model, optimizer = lp.fresh_model(two_replicas)
    for x, y in lp.local_batches(0, 1):  # the whole global batch, one device computes
        grads = lp.local_mean_gradients(model, x, y)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert lp.max_diff(model.get_weights(), reference) <= 1e-5


def _mixed_precision_run(tf, strategy, *, agree=True, overflow_replica=None):
    """train_step with mixed_float16 layers and a LossScaleOptimizer; returns (weights, scale)."""
    import keras

    with strategy.scope():
        model = keras.Sequential([
            keras.Input((_problem.FEATURES,)),
            keras.layers.Dense(16, activation="tanh", dtype="mixed_float16"),
            keras.layers.Dense(4, activation="tanh", dtype="mixed_float16"),
            keras.layers.Dense(1, dtype="float32")])
        model.set_weights(_problem.initial_weights())
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(_problem.LEARNING_RATE), initial_scale=2.0 ** 10)
    step = keras_dp.train_step(model, optimizer, "mse", strategy=strategy, check_data=False)
    step._loss_scaling = agree
    x, y = _problem.data()
    if overflow_replica is not None:  # one replica's rows of the first global batch overflow
        rows = slice(8 * overflow_replica, 8 * overflow_replica + 8)
        x, y = x.copy(), y.copy()
        x[rows] *= 1e4
        y[rows] = 6e4
    for batch, _ in zip(_problem.distributed_dataset(strategy, arrays=(x, y)), range(_problem.STEPS)):
        step(batch)
    return [np.array(w) for w in model.get_weights()], float(optimizer.dynamic_scale.numpy())


def test_mixed_precision_matches_float32(tf, reference, two_replicas):
    weights, scale = _mixed_precision_run(tf, two_replicas)
    assert scale == 2.0 ** 10
    assert lp.max_diff(weights, reference) <= 1e-3  # float16 forward pass


@pytest.mark.slow
def test_mixed_precision_replicas_skip_an_overflow_together(tf, two_replicas):
    """Keras's LossScaleOptimizer looks at one replica's gradients only: when another
    replica overflows it applies infinite gradients. keras_dp makes them agree."""
    one_device, one_scale = _mixed_precision_run(tf, tf.distribute.get_strategy(),
                                                 overflow_replica=1)
    weights, scale = _mixed_precision_run(tf, two_replicas, overflow_replica=1)
    assert scale == one_scale == 2.0 ** 9  # the first step was skipped, once
    assert lp.max_diff(weights, one_device) <= 1e-3
    broken, _ = _mixed_precision_run(tf, two_replicas, agree=False, overflow_replica=1)
    assert not all(np.isfinite(w).all() for w in broken)
