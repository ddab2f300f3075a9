"""Keras' `gradient_accumulation_steps` under every strategy (keras_fix part `gradient_accumulation`).

2 replicas x global batch 16 x 2 accumulation steps give the weights of 1 device x batch 32,
with one all-reduce per optimizer update. The 2-worker case is in test_multiworker.py.
"""

import numpy as np
import pytest

import _accumulation
import _problem
import keras_dp
from keras_dp import keras_fix
from keras_dp.cluster import resolve_cluster
from _problem import embedding_lm as _embedding_lm
from test_keras_fix import fix_parts, max_diff  # noqa: F401 - fixture

SINGLE = resolve_cluster({})


def _strategy(kind, replicas=2):
    if kind == "default":
        import tensorflow as tf

        return tf.distribute.get_strategy()
    if kind == "one_device":
        return keras_dp.get_strategy("one_device", cluster=SINGLE, devices=["/cpu:0"])
    return keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                 devices=[f"/cpu:{i}" for i in range(replicas)])


@pytest.fixture(scope="module")
def full_batch(tf):
    """One device, batch 32, no accumulation: the reference."""
    return _accumulation.train(tf.distribute.get_strategy(), accumulate=None)


def test_without_the_part_two_replicas_fail(tf, fix_parts):
    strategy = _strategy("mirrored")
    keras_fix.remove(["gradient_accumulation"])
    with pytest.raises(RuntimeError, match="merge_call` called while defining a new graph"):
        _accumulation.train(strategy)


@pytest.mark.parametrize("kind,replicas", [("default", 1), ("one_device", 1),
                                           ("mirrored", 2), ("mirrored", 4)])
def test_accumulating_matches_one_device_with_the_full_batch(tf, full_batch, kind, replicas):
    strategy = _strategy(kind, replicas)
    assert strategy.num_replicas_in_sync == replicas
    if replicas > 1:
        assert keras_fix.is_applied("gradient_accumulation")   # get_strategy applied it
    model, weights = _accumulation.train(strategy)
    reference, reference_weights = full_batch
    diff = max_diff(weights, reference_weights)
    print(f"{kind} x{replicas}, global batch 16 x 2 accumulated vs 1 device x 32: "
          f"max abs weight diff {diff:.2e}")
    assert diff <= 1e-5
    assert max_diff(weights, _problem.initial_weights()) > 0.05
    # Keras counts micro-batches in _iterations and updates in iterations, as on one device.
    assert int(model.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy())
    assert int(model.optimizer._iterations.numpy()) == _accumulation.MICRO_STEPS


def test_accumulating_micro_batches_is_not_training_on_them(tf, full_batch):
    """The equivalence test can fail: plain steps on the micro-batches differ."""
    _, micro = _accumulation.train(_strategy("mirrored"), accumulate=None,
                                   global_batch=_accumulation.MICRO_BATCH)
    assert max_diff(micro, full_batch[1]) > 1e-2


@pytest.mark.parametrize("clipping", [None, {"global_clipnorm": 0.3}])
def test_one_all_reduce_per_optimizer_update(tf, monkeypatch, clipping):
    strategy = _strategy("mirrored")
    counter = _accumulation.count_all_reduces(strategy, monkeypatch)
    _accumulation.train(strategy, accumulate=None, clipping=clipping)   # one per step
    plain = int(counter.numpy())
    assert plain == _accumulation.MICRO_STEPS // _accumulation.ACCUMULATE
    counter.assign(0)
    _accumulation.train(strategy, clipping=clipping)
    updates = _accumulation.MICRO_STEPS // _accumulation.ACCUMULATE
    print(f"{_accumulation.MICRO_STEPS} micro-batches, {updates} updates: "
          f"{int(counter.numpy())} all-reduces")
    assert int(counter.numpy()) == updates


@pytest.mark.parametrize("option", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping_clips_the_accumulated_global_gradient(tf, option):
    clipping = {option: {"clipnorm": 0.3, "global_clipnorm": 0.3, "clipvalue": 0.05}[option]}
    _, alone = _accumulation.train(tf.distribute.get_strategy(), accumulate=None,
                                   clipping=clipping)
    _, unclipped = _accumulation.train(tf.distribute.get_strategy(), accumulate=None)
    assert max_diff(alone, unclipped) > 1e-3   # the clipping bites
    _, weights = _accumulation.train(_strategy("mirrored"), clipping=clipping)
    assert max_diff(weights, alone) <= 1e-5


def test_learning_rate_schedule_and_exhausted_input_count_as_on_one_device(tf):
    """A schedule sees Keras' micro-batch count (as on one device with accumulation), and an
    input of unknown length (no steps_per_epoch, 2 epochs) adds no step."""
    options = dict(schedule=True, steps_per_epoch=False, epochs=2)
    alone, alone_weights = _accumulation.train(tf.distribute.get_strategy(), **options)
    model, weights = _accumulation.train(_strategy("mirrored"), **options)
    assert max_diff(weights, alone_weights) <= 1e-5
    assert int(model.optimizer._iterations.numpy()) == 2 * _accumulation.MICRO_STEPS
    assert int(model.optimizer.iterations.numpy()) == int(alone.optimizer.iterations.numpy())


def test_loss_scale_optimizer_accumulates_as_on_one_device(tf, full_batch):
    _, alone = _accumulation.train(tf.distribute.get_strategy(), accumulate=None,
                                   loss_scale=True)
    assert max_diff(alone, full_batch[1]) <= 1e-5
    model, weights = _accumulation.train(_strategy("mirrored"), loss_scale=True)
    assert max_diff(weights, alone) <= 1e-5
    assert int(model.optimizer.inner_optimizer.iterations.numpy()) == \
        _accumulation.MICRO_STEPS // _accumulation.ACCUMULATE


@pytest.mark.slow
def test_embedding_gradients_accumulate_as_the_full_batch(tf, fix_parts):
    """IndexedSlices gradients (token and position embeddings), Adam: 2 replicas x 8 x 2
    accumulated == 1 device x 16."""
    import keras

    tokens = np.random.default_rng(5).integers(0, 256, size=(4 * 16, 17)).astype("int32")
    x, y = tokens[:, :-1], tokens[:, 1:]
    keras_fix.apply(["sparse_gradients"])   # as keras_dp does for every strategy
    alone = _embedding_lm()
    initial = alone.get_weights()
    alone.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    with _strategy("mirrored").scope():
        model = _embedding_lm()
        model.compile(optimizer=keras.optimizers.Adam(5e-3, beta_2=0.99,
                                                      gradient_accumulation_steps=2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.set_weights(initial)
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    diff = max_diff(model.get_weights(), alone.get_weights())
    print(f"embeddings, 2 replicas x 8 x 2 accumulated vs 1 device x 16: {diff:.2e}")
    assert diff <= 1e-5
