"""Real 2-process MultiWorkerMirroredStrategy runs on 127.0.0.1 through keras_dp.scope()."""

import json

import numpy as np
import pytest

import _problem
from _multiproc import run_workers

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def reference_weights(tf):
    """One device, global batch B, same data and initial weights."""
    _, weights = _problem.train(tf.distribute.get_strategy())
    return weights


def test_two_workers_fit_evaluate_predict_and_match_one_device(tf, tmp_path,
                                                              reference_weights):
    results = run_workers("fit_worker.py", 2, [str(tmp_path)], timeout=240)
    for result in results:
        result.check()
    w0 = list(np.load(tmp_path / "weights_0.npz").values())
    w1 = list(np.load(tmp_path / "weights_1.npz").values())
    # Both workers end with identical weights (all-reduce keeps mirrors in sync).
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    # ... equal to one device with the same global batch.
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, reference_weights))
    assert diff <= 1e-5, diff
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, _problem.initial_weights()))
    assert moved > 0.05, moved

    # With global_clipnorm, the 2 workers clip the all-reduced gradient as one device does.
    clipped = [list(np.load(tmp_path / f"weights_clipped_{w}.npz").values()) for w in (0, 1)]
    _, alone = _problem.train(tf.distribute.get_strategy(),
                              global_clipnorm=_problem.CLIPPING["global_clipnorm"])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(clipped[0], alone))
    print(f"2 workers with global_clipnorm: max abs diff to one device {diff:.2e}")
    assert diff <= 1e-5, diff

    r0 = json.loads((tmp_path / "result_0.json").read_text())
    r1 = json.loads((tmp_path / "result_1.json").read_text())
    assert r0["is_chief"] and not r1["is_chief"]
    assert r0["keras_fix"] and r1["keras_fix"]
    assert r0["loss"] == r1["loss"]  # metrics are reduced across workers
    assert r0["eval"] == r1["eval"] and np.isfinite(r0["eval"]["loss"])
    assert r0["predictions_shape"] == [32, 1]
    # scope() exported TF_CONFIG for TensorFlow and other libraries.
    config = json.loads(r1["tf_config"])
    assert config["task"] == {"type": "worker", "index": 1}
    assert len(config["cluster"]["worker"]) == 2


@pytest.mark.parametrize("setting,error", [
    ("0", "Attempt to convert a value (PerReplica"),
    ("symbolic_build", "Invalid reduction dimension 0 for input with 0 dimensions"),
])
def test_keras_fix_is_needed(tmp_path, setting, error):
    """Without each part of the fix, model.fit fails on every worker (keras#20585)."""
    results = run_workers("fit_worker.py", 2, [str(tmp_path)],
                          env={"KERAS_DP_KERAS_FIX": setting}, timeout=180)
    for result in results:
        assert result.returncode != 0
        assert error in result.output, result.output[-3000:]


def test_two_workers_accumulate_gradients_as_one_device_with_the_full_batch(tf, tmp_path):
    """Keras' gradient_accumulation_steps=2 on 2 workers x global batch 16 == 1 device x 32,
    with one all-reduce per update (keras_fix part gradient_accumulation)."""
    import _accumulation

    results = run_workers("accumulation_worker.py", 2, [str(tmp_path)], timeout=240)
    for result in results:
        result.check()
    workers = [list(np.load(tmp_path / f"accumulated_{w}.npz").values()) for w in (0, 1)]
    for a, b in zip(*workers):
        np.testing.assert_array_equal(a, b)
    _, alone = _accumulation.train(tf.distribute.get_strategy(), accumulate=None)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(workers[0], alone))
    print(f"2 workers x 16 x 2 accumulated vs 1 device x 32: max abs diff {diff:.2e}")
    assert diff <= 1e-5, diff
    updates = _accumulation.MICRO_STEPS // _accumulation.ACCUMULATE
    for w in (0, 1):
        counts = json.loads((tmp_path / f"accumulated_{w}.json").read_text())
        assert counts == {"all_reduces": updates, "iterations": updates,
                          "micro_batches": _accumulation.MICRO_STEPS}, counts
