"""The Keras fix's part `replica_xla`: `jit_compile=True` under several replicas and workers.

Each replica's forward and backward pass is XLA-compiled; the all-reduce and the update stay
outside. N replicas (in-process logical CPUs) and 2 workers train like one device with the
global batch, and without the part Keras' whole-step XLA fails.
"""

import glob
import json
import os

import numpy as np
import pytest

import _problem
import keras_dp
from _multiproc import run_workers
from keras_dp import keras_fix
from keras_dp.cluster import resolve_cluster
from test_keras_fix import fix_parts, max_diff  # noqa: F401 (fix_parts: a fixture)

#: A Dense layer's op, one of which the XLA-compiled function must hold.
MATMULS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")
#: Ops of the gradient all-reduce, which must stay out of the XLA-compiled function.
COLLECTIVES = ("CollectiveReduceV2", "CollectiveGatherV2", "CollectiveReduce",
               "CollectiveGather", "NcclAllReduce", "_Send", "_Recv")


def mirrored(replicas):
    return keras_dp.get_strategy("mirrored", cluster=resolve_cluster({}),
                                 devices=[f"/cpu:{i}" for i in range(replicas)])


@pytest.fixture(scope="module")
def one_device(tf):
    """One device, global batch B: weights, metrics, evaluation and predictions."""
    model = _problem.build_model(metrics=["mae"])
    history = model.fit(_problem.distributed_dataset(tf.distribute.get_strategy()),
                        epochs=1, steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
    x, _ = _problem.data()
    return {"weights": model.get_weights(), "history": history.history,
            "eval": model.evaluate(_problem.distributed_dataset(tf.distribute.get_strategy()),
                                   steps=3, verbose=0, return_dict=True),
            "predictions": model.predict(x[:32], batch_size=8, verbose=0)}


def assert_compiled_per_replica(model, kind, replicas):
    """The replica's part of the step is a jit_compile function, traced once per replica
    device, holding the model's ops and no collective."""
    function = model._keras_dp_replica_xla[kind]
    assert function._jit_compile is True
    assert function.experimental_get_tracing_count() == replicas
    for concrete in function._list_all_concrete_functions():
        assert concrete.function_def.attr["_XlaMustCompile"].b
        ops = {op.type for op in concrete.graph.get_operations()}
        # (Keras 3.10's Dense on 3-D inputs is a BatchMatMulV2, 3.15's a MatMul.)
        assert ops.intersection(MATMULS) and not ops.intersection(COLLECTIVES), ops


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.slow
def test_fit_evaluate_predict_with_xla_match_one_device(tf, one_device, replicas):
    strategy = mirrored(replicas)
    assert keras_fix.is_applied("replica_xla")
    with strategy.scope():
        model = _problem.build_model(jit_compile=True, metrics=["mae"])
    history = model.fit(_problem.distributed_dataset(strategy), epochs=1,
                        steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)
    evaluation = model.evaluate(_problem.distributed_dataset(strategy), steps=3, verbose=0,
                                return_dict=True)
    x, _ = _problem.data()
    predictions = model.predict(x[:32], batch_size=8, verbose=0)
    assert model.jit_compile is True
    assert_compiled_per_replica(model, "train", replicas)
    assert_compiled_per_replica(model, "test", replicas)
    assert_compiled_per_replica(model, "predict", replicas)
    assert max_diff(model.get_weights(), one_device["weights"]) <= 1e-5
    assert max_diff(model.get_weights(), _problem.initial_weights()) > 0.05
    for name, values in one_device["history"].items():
        assert history.history[name] == pytest.approx(values, rel=1e-5), name
    assert evaluation == pytest.approx(one_device["eval"], rel=1e-5)
    np.testing.assert_allclose(predictions, one_device["predictions"], atol=1e-5)


def test_global_clipnorm_with_xla_matches_one_device(tf):
    clip = {"global_clipnorm": _problem.CLIPPING["global_clipnorm"]}
    _, alone = _problem.train(tf.distribute.get_strategy(), **clip)
    model, weights = _problem.train(mirrored(2), jit_compile=True, **clip)
    assert_compiled_per_replica(model, "train", 2)
    assert max_diff(weights, alone) <= 1e-5


@pytest.mark.slow
def test_adam_on_embeddings_with_xla_matches_one_device(tf):
    """Sparse (IndexedSlices) gradients leave the XLA function; the update sums their rows."""
    x, y = _problem.lm_data()
    alone = _problem.embedding_lm()
    initial = alone.get_weights()
    alone.fit(x, y, batch_size=_problem.LM_BATCH, shuffle=False, verbose=0)
    with mirrored(2).scope():
        model = _problem.embedding_lm(jit_compile=True)
    model.set_weights(initial)
    model.fit(x, y, batch_size=_problem.LM_BATCH, shuffle=False, verbose=0)
    assert_compiled_per_replica(model, "train", 2)
    assert max_diff(model.get_weights(), alone.get_weights()) <= 1e-5


@pytest.mark.slow
def test_mixed_precision_loss_scaling_with_xla(tf):
    """A LossScaleOptimizer scales the loss inside the XLA function and unscales outside."""
    import keras

    x, y = _problem.lm_data()

    def lm(jit_compile):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model = _problem.embedding_lm(jit_compile)
        finally:
            keras.config.set_dtype_policy("float32")
        model.optimizer = keras.optimizers.LossScaleOptimizer(model.optimizer)
        model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit_compile)
        return model

    alone = lm(False)
    initial = alone.get_weights()
    alone.fit(x, y, batch_size=_problem.LM_BATCH, shuffle=False, verbose=0)
    with mirrored(2).scope():
        model = lm(True)
    model.set_weights(initial)
    history = model.fit(x, y, batch_size=_problem.LM_BATCH, shuffle=False, verbose=0)
    assert_compiled_per_replica(model, "train", 2)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == _problem.LM_STEPS
    # float16 forward passes: equal to one device within half-precision rounding.
    assert max_diff(model.get_weights(), alone.get_weights()) <= 1e-3
    assert max_diff(model.get_weights(), initial) > 1e-3


def test_without_the_part_keras_cannot_compile_the_step(tf, fix_parts):
    strategy = mirrored(2)   # (get_strategy applies the parts)
    keras_fix.remove(["replica_xla"])
    with strategy.scope():
        model = _problem.build_model(jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Trying to access resource"):
        model.fit(_problem.distributed_dataset(strategy), epochs=1,
                  steps_per_epoch=_problem.STEPS, verbose=0, shuffle=False)


def test_auto_means_xla_where_keras_would_use_it_without_a_strategy(tf, fix_parts,
                                                                    monkeypatch):
    """jit_compile="auto" under a strategy: off on this CPU-only machine (Keras' rule
    without a strategy); with a GPU, on (Keras alone: always off under a strategy)."""
    strategy = mirrored(2)

    def auto():
        with strategy.scope():
            model = _problem.build_model(jit_compile="auto")
        return model.jit_compile

    assert auto() is False
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    devices = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: devices(kind) + ([gpu] if kind in (None, "GPU")
                                                           else []))
    assert auto() is True
    keras_fix.remove(["replica_xla"])
    assert auto() is False


@pytest.mark.multiprocess
def test_two_workers_with_xla_match_one_device(tf, tmp_path, one_device):
    dumps = [tmp_path / f"xla_dump_{i}" for i in range(2)]
    results = run_workers("xla_worker.py", 2, [str(tmp_path)], timeout=300,
                          per_worker_env=[{"XLA_FLAGS": f"--xla_dump_to={d}"} for d in dumps])
    for result in results:
        result.check()

    def weights(name, worker):
        return list(np.load(tmp_path / f"{name}_{worker}.npz").values())

    _, clipped = _problem.train(tf.distribute.get_strategy(),
                                global_clipnorm=_problem.CLIPPING["global_clipnorm"])
    # One device as keras_dp runs it: part sparse_gradients applies under every strategy
    # (without it Keras' Adam takes duplicate rows one by one, 1.1e-2 away), and when this
    # test runs alone nothing in this process has applied the parts yet.
    keras_fix.apply()
    lm = _problem.embedding_lm()
    lm.set_weights(weights("adam_embedding_initial", 0))   # the workers' initial weights
    lm.fit(*_problem.lm_data(), batch_size=_problem.LM_BATCH, shuffle=False, verbose=0)
    references = {"sgd": one_device["weights"], "clipped": clipped,
                  "adam_embedding": lm.get_weights()}
    for name, reference in references.items():
        assert max_diff(weights(name, 0), weights(name, 1)) == 0, name
        diff = max_diff(weights(name, 0), reference)
        print(f"2 workers with XLA, {name}: max abs diff to one device {diff:.2e}")
        assert diff <= 1e-5, name
    for worker, dump in enumerate(dumps):
        result = json.loads((tmp_path / f"result_{worker}.json").read_text())
        assert result["traces"] == {"train": 1, "test": 1}
        assert result["history"]["loss"] == pytest.approx(one_device["history"]["loss"],
                                                          rel=1e-5)
        assert result["eval"] == pytest.approx(one_device["eval"], rel=1e-5)
        np.testing.assert_allclose(result["predictions"], one_device["predictions"],
                                   atol=1e-5)
        # XLA compiled each worker's forward and backward pass (and the test forward).
        modules = [os.path.basename(p) for p in glob.glob(str(dump / "*.txt"))]
        assert any("replica_forward_backward" in m for m in modules), modules
        assert any("replica_forward_" in m and "backward" not in m for m in modules), modules
        assert "XLA" in result["without_part"] or "xla" in result["without_part"], \
            result["without_part"]
