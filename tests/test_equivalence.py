"""N replicas with global batch B give the weights of one device with batch B.

The 2-worker (2-process) case is in test_multiworker.py.
"""

import numpy as np
import pytest

import _problem
import keras_dp
from keras_dp.cluster import resolve_cluster

SINGLE = resolve_cluster({})


@pytest.fixture(scope="module")
def reference(tf):
    _, weights = _problem.train(tf.distribute.get_strategy())
    return weights


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("replicas", [2, 4])
def test_mirrored_cpu_replicas_match_one_device(tf, reference, replicas):
    strategy = keras_dp.get_strategy(
        "mirrored", cluster=SINGLE, devices=[f"/cpu:{i}" for i in range(replicas)])
    assert strategy.num_replicas_in_sync == replicas
    _, weights = _problem.train(strategy)
    assert max_diff(weights, reference) <= 1e-5
    assert max_diff(weights, _problem.initial_weights()) > 0.05


def test_equivalence_test_can_fail(tf, reference):
    """A wrong global batch (per-replica batch B on 2 replicas) is detected."""
    strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE, devices=["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _problem.build_model()
    dataset = _problem.distributed_dataset(strategy, global_batch=2 * _problem.GLOBAL_BATCH)
    model.fit(dataset, epochs=1, steps_per_epoch=_problem.STEPS // 2, verbose=0)
    assert max_diff(model.get_weights(), reference) > 1e-3
