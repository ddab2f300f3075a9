"""The Keras 3 fixes that apply in one process: clipping across replicas, the step after a
finite input's end, embedding gradients under Adam. (The multi-worker parts are in
test_multiworker.py.)

Each test runs with and without its part of the fix: without it the Keras fault shows
(measured and printed, `pytest -s`), with it the result is exact.
"""

import time

import numpy as np
import pytest

import _problem
import keras_dp
from keras_dp import keras_fix
from keras_dp.keras_fix import sparse_gradients
from keras_dp.cluster import resolve_cluster
from keras_dp.errors import ConfigError


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture
def fix_parts():
    """Lets a test remove parts of the fix; puts back what was applied before."""
    before = [part for part in keras_fix.PARTS if keras_fix.is_applied(part)]
    yield
    keras_fix.remove()
    keras_fix.apply(before)


@pytest.fixture(scope="module")
def two_replicas(tf):
    return keras_dp.get_strategy("mirrored", cluster=resolve_cluster({}),
                                 devices=["/cpu:0", "/cpu:1"])


@pytest.mark.parametrize("option", sorted(_problem.CLIPPING))
def test_clipping_on_two_replicas_matches_one_device(tf, two_replicas, fix_parts, option):
    clipping = {option: _problem.CLIPPING[option]}
    _, alone = _problem.train(tf.distribute.get_strategy(), **clipping)
    _, unclipped = _problem.train(tf.distribute.get_strategy())
    assert max_diff(alone, unclipped) > 1e-2  # the clipping bites

    assert keras_fix.is_applied("gradient_clipping")  # get_strategy applied it (2 replicas)
    _, fixed = _problem.train(two_replicas, **clipping)
    keras_fix.remove(["gradient_clipping"])
    _, keras_alone = _problem.train(two_replicas, **clipping)
    print(f"{option}: 2 replicas vs 1 device, max abs diff {max_diff(keras_alone, alone):.2e} "
          f"with Keras alone, {max_diff(fixed, alone):.2e} with the fix")
    assert max_diff(keras_alone, alone) > 1e-2  # each replica clipped its own gradient
    assert max_diff(fixed, alone) <= 1e-5


def test_clipping_in_a_custom_loop_on_two_replicas(tf, two_replicas, fix_parts):
    """optimizer.apply_gradients inside ctx.run / strategy.run is fixed the same way."""
    import keras

    keras_fix.apply(["gradient_clipping"])
    clip = {"global_clipnorm": _problem.CLIPPING["global_clipnorm"]}
    _, alone = _problem.train(tf.distribute.get_strategy(), **clip)
    with two_replicas.scope():
        model = _problem.build_model(**clip)
    loss_fn = keras.losses.MeanSquaredError(reduction=None)

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = keras_dp.compute_loss(loss_fn(y, model(x)),
                                             global_batch_size=_problem.GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        two_replicas.run(replica_step, args=(x, y))

    for x, y in _problem.distributed_dataset(two_replicas):
        step(x, y)
    assert max_diff(model.get_weights(), alone) <= 1e-5


def _static_batches_of_unknown_length(tf, strategy, steps):
    """`steps` batches with a static batch size, of unknown length (a distributed
    dataset), whose end takes 0.3 s to show, as a large input pipeline's may."""
    x, y = _problem.data(steps, _problem.GLOBAL_BATCH)

    def slow(value):
        time.sleep(0.3)
        return value

    def dataset_fn(ctx):
        per_replica = ctx.get_per_replica_batch_size(_problem.GLOBAL_BATCH)
        batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica,
                                                                    drop_remainder=True)
        slow_end = tf.data.Dataset.range(1).map(
            lambda i: tf.numpy_function(slow, [i], tf.int64)).filter(lambda i: False).map(
            lambda i: (tf.zeros([per_replica, _problem.FEATURES]), tf.zeros([per_replica, 1])))
        return batches.concatenate(slow_end)

    return strategy.distribute_datasets_from_function(dataset_fn)


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.slow
def test_evaluate_and_fit_on_an_input_of_unknown_length(tf, two_replicas, fix_parts, replicas):
    steps = 4
    strategy = two_replicas if replicas == 2 else tf.distribute.get_strategy()
    exact = _problem.build_model().evaluate(
        tf.data.Dataset.from_tensor_slices(_problem.data(steps)).batch(_problem.GLOBAL_BATCH),
        verbose=0)

    def run():
        with strategy.scope():
            model = _problem.build_model()
        loss = model.evaluate(_static_batches_of_unknown_length(tf, strategy, steps), verbose=0)
        model.fit(_static_batches_of_unknown_length(tf, strategy, steps), epochs=2, verbose=0)
        return loss, int(model.optimizer.iterations.numpy())

    keras_fix.apply(["exhausted_input"])
    fixed_loss, fixed_steps = run()
    keras_fix.remove(["exhausted_input"])
    keras_loss, keras_steps = run()
    print(f"{replicas} replica(s), evaluate over {steps} batches: {exact:.4f} exact, "
          f"{keras_loss:.4f} Keras alone ({keras_loss / exact:.3f}x), {fixed_loss:.4f} fixed; "
          f"fit 2 epochs: optimizer.iterations {keras_steps} Keras alone, {fixed_steps} fixed")
    assert keras_loss == pytest.approx(exact * steps / (steps + 1), rel=1e-5)
    assert keras_steps == 2 * (steps + 1)
    assert fixed_loss == pytest.approx(exact, rel=1e-6)
    assert fixed_steps == 2 * steps


def test_with_the_fix_a_first_xla_step_still_builds_the_optimizer(tf, fix_parts):
    """The first step creates the optimizer's variables; XLA lifts them out of the step,
    which the batch dependency must not prevent."""
    import keras

    keras_fix.apply(["exhausted_input"])
    model = keras.Sequential([keras.Input((_problem.FEATURES,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    x, y = _problem.data(2)
    history = model.fit(x, y, batch_size=_problem.GLOBAL_BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and model.optimizer.built


def _adam_built_in_a_custom_loop(tf, strategy, steps=4, batch=8):
    """keras.io's loop from scratch with a strategy: Adam is built by its first apply()."""
    import keras

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.MeanSquaredError(reduction=None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 8)).astype("float32")
    y = rng.normal(size=(steps * batch, 4)).astype("float32")
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(batch))

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(loss_fn(y, model(x)), global_batch_size=batch)
            optimizer.apply(tape.gradient(loss, model.trainable_weights),
                            model.trainable_weights)
        strategy.run(replica_step, args=(x, y))

    for xb, yb in data:
        step(xb, yb)
    return model.get_weights()


def test_optimizer_built_in_a_custom_loop_on_two_replicas(tf, two_replicas, fix_parts):
    """Slots created by the first apply() inside strategy.run (keras-team/keras#23085)."""
    alone = _adam_built_in_a_custom_loop(tf, tf.distribute.get_strategy())
    keras_fix.apply(["optimizer_variables"])   # as keras_dp does for 2 replicas
    fixed = _adam_built_in_a_custom_loop(tf, two_replicas)
    assert max_diff(fixed, alone) <= 1e-5   # the same training as one device
    keras_fix.remove(["optimizer_variables"])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="must feed a value for placeholder tensor"):
        _adam_built_in_a_custom_loop(tf, two_replicas)


def test_parts_are_checked_switchable_and_chosen_per_strategy(tf, two_replicas, monkeypatch):
    needed = {part["name"]: part["in_range"] for part in keras_fix.registry()}
    assert set(needed) == set(keras_fix.REGISTRY)
    assert all(needed.values())  # Keras 3.10-3.15 have all the faults
    assert keras_fix.parts_for(tf.distribute.get_strategy()) == (
        "exhausted_input", "sparse_gradients", "replica_xla", "tensorboard_check")
    assert keras_fix.parts_for(two_replicas) == (
        "gradient_clipping", "optimizer_variables", "gradient_accumulation", "exhausted_input",
        "sparse_gradients", "replica_xla", "tensorboard_check")
    monkeypatch.setenv("KERAS_DP_KERAS_FIX", "gradient_clipping, exhausted_input")
    assert keras_fix.enabled_parts() == ("gradient_clipping", "exhausted_input")
    monkeypatch.setenv("KERAS_DP_KERAS_FIX", "0")
    assert keras_fix.enabled_parts() == ()
    monkeypatch.setenv("KERAS_DP_KERAS_FIX", "clipping")
    with pytest.raises(ConfigError, match=r"KERAS_DP_KERAS_FIX.*gradient_clipping.*"
                                          r"Received: KERAS_DP_KERAS_FIX=clipping"):
        keras_fix.enabled_parts()


def test_deduplicate_sums_the_slices_of_a_row(tf):
    slices = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]]),
                              tf.constant([2, 0, 2]), tf.constant([4, 2]))
    unique = sparse_gradients.deduplicate(slices)
    assert sorted(unique.indices.numpy().tolist()) == [0, 2]
    np.testing.assert_array_equal(tf.convert_to_tensor(unique).numpy(),
                                  tf.convert_to_tensor(slices).numpy())
    dense = tf.ones((2, 2))
    assert sparse_gradients.deduplicate(dense) is dense


@pytest.mark.slow
def test_adam_on_embeddings_on_two_replicas_matches_one_device(tf, two_replicas, fix_parts):
    x, y = _problem.lm_data()
    keras_fix.apply(["sparse_gradients"])   # as keras_dp does for every strategy
    alone = _problem.embedding_lm()
    initial = alone.get_weights()
    alone.fit(x, y, batch_size=8, shuffle=False, verbose=0)

    def two(fix):
        keras_fix.remove(["sparse_gradients"])
        if fix:
            keras_fix.apply(["sparse_gradients"])
        with two_replicas.scope():
            model = _problem.embedding_lm()
        model.set_weights(initial)
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        return model.get_weights()

    keras_alone, fixed = max_diff(two(False), alone.get_weights()), \
        max_diff(two(True), alone.get_weights())
    print(f"Adam, 3 steps, 2 replicas vs 1 device: max abs weight diff {keras_alone:.2e} "
          f"with Keras alone, {fixed:.2e} with the fix")
    assert keras_alone > 1e-3   # duplicate slices squared one by one (lr 5e-3)
    assert fixed <= 1e-5


#: Each Keras-layer part and the test that fails without it ("file::test").
PART_TESTS = {
    "symbolic_build": "test_multiworker.py::test_keras_fix_is_needed",
    "metric_reduction": "test_multiworker.py::test_keras_fix_is_needed",
    "stock_callbacks": "test_dropin_writes.py::test_stock_callbacks_on_a_non_chief_write_nowhere",
    "chief_saving": "test_dropin_writes.py::test_non_chief_saves_nowhere",
    "gradient_clipping": "test_keras_fix.py::test_clipping_on_two_replicas_matches_one_device",
    "optimizer_variables":
        "test_keras_fix.py::test_optimizer_built_in_a_custom_loop_on_two_replicas",
    "gradient_accumulation": "test_accumulation.py::test_without_the_part_two_replicas_fail",
    "exhausted_input": "test_keras_fix.py::test_evaluate_and_fit_on_an_input_of_unknown_length",
    "sparse_gradients":
        "test_keras_fix.py::test_adam_on_embeddings_on_two_replicas_matches_one_device",
    "replica_xla": "test_replica_xla.py::test_without_the_part_keras_cannot_compile_the_step",
    "tensorboard_check": "test_tensorboard_check.py::test_without_the_part_keras_fails_inside_fit",
    "early_collectives": "test_early.py::test_without_the_part_the_program_gets_the_startup_error",
    "apply_check": "test_loop_multiworker.py::"
                   "test_two_workers_custom_loops_match_one_device_and_catch_mistakes",
    "fit_step": "test_backup.py::test_a_resumed_fit_ends_with_the_uninterrupted_weights",
    "collective_keys": "test_strategy.py::test_strategies_over_other_devices_in_one_process",
    "failure_hook": "test_fault.py::test_installed_hook_prints_the_cause_and_exits_with_its_code",
    "warning_filter": "test_keras_fix.py::test_warning_filter_hides_only_the_shuffle_warning",
}


def test_every_part_has_a_test_that_fails_without_it():
    import pathlib

    assert set(PART_TESTS) == set(keras_fix.REGISTRY)
    here = pathlib.Path(__file__).parent
    for part, where in PART_TESTS.items():
        name, test = where.split("::")
        assert f"def {test}(" in (here / name).read_text(encoding="utf-8"), (part, where)


def test_a_part_outside_the_tested_range_refuses_loudly(tf, monkeypatch):
    from keras_dp.errors import KerasDPError
    from keras_dp.keras_fix import _part

    keras_fix.remove(["exhausted_input"])
    monkeypatch.setattr(_part, "installed", lambda: ("3.16.0", "2.21.0"))
    with pytest.raises(KerasDPError, match=r"exhausted_input.*Keras 3\.16\.0 with TensorFlow "
                                           r"2\.21\.0.*Keras 3\.10-3\.15.*KERAS_DP_KERAS_FIX"):
        keras_fix.apply(["exhausted_input"])
    assert not keras_fix.is_applied("exhausted_input")
    assert not next(p for p in keras_fix.registry() if p["name"] == "exhausted_input")["in_range"]
    monkeypatch.setenv("KERAS_DP_KERAS_FIX", "gradient_clipping")   # switched off knowingly
    assert keras_fix.apply(["exhausted_input"]) is False


def test_a_part_whose_target_changed_shape_refuses_loudly(tf, monkeypatch):
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from keras_dp.errors import KerasDPError

    keras_fix.remove(["exhausted_input"])
    monkeypatch.setattr(TensorFlowTrainer, "_make_function", lambda self, function, xla: None)
    with pytest.raises(KerasDPError, match=r"exhausted_input.*_make_function takes \(self, "
                                           r"function, xla\).*\(self, step_function, \.\.\.\)"):
        keras_fix.apply(["exhausted_input"])
    monkeypatch.delattr(TensorFlowTrainer, "_make_function")
    with pytest.raises(KerasDPError, match=r"_make_function is missing"):
        keras_fix.apply(["exhausted_input"])


def test_warning_filter_hides_only_the_shuffle_warning(tf):
    import warnings

    from keras_dp.keras_fix import warning_filter

    shuffle = "`shuffle=True` was passed, but will be ignored since the data `x` was provided"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(shuffle, UserWarning)
        warning_filter.install()
        warnings.warn(shuffle, UserWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in caught] == [shuffle, "another warning"]
