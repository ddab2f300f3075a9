"""Without the tensorboard package, TensorBoard callbacks fail when created, naming the fix
(keras_fix part `tensorboard_check`; keras_dp's own callback checks on every strategy)."""

import ast
import os
import sys

import numpy as np
import pytest

import _problem
import keras_dp
from keras_dp import keras_fix
from keras_dp.cluster import resolve_cluster
from keras_dp.errors import ConfigError
from test_keras_fix import fix_parts  # noqa: F401 - fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = r'pip install tensorboard \(or pip install "keras-dp\[cpu\]".*Received: tensorboard='


@pytest.fixture
def no_tensorboard(monkeypatch):
    """tensorboard cannot be imported (as after `pip install "tensorflow-cpu>=2.21"`)."""
    for name in [n for n in sys.modules if n == "tensorboard" or n.startswith("tensorboard.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)


def test_keras_callback_fails_when_created(tf, fix_parts, no_tensorboard, tmp_path):
    import keras

    keras_dp.get_strategy("default", cluster=resolve_cluster({}))
    assert keras_fix.is_applied("tensorboard_check")   # for every keras_dp strategy
    with pytest.raises(ConfigError, match="keras.callbacks.TensorBoard writes its logs with "
                                          "tf.summary.*" + FIX):
        keras.callbacks.TensorBoard(str(tmp_path))


def test_keras_dp_callback_fails_when_created_on_any_strategy(tf, fix_parts, no_tensorboard,
                                                             tmp_path):
    keras_fix.remove(["tensorboard_check"])
    with pytest.raises(ConfigError, match="keras_dp.callbacks.TensorBoard .*" + FIX):
        keras_dp.callbacks.TensorBoard(str(tmp_path))


def test_without_the_part_keras_fails_inside_fit(tf, fix_parts, no_tensorboard,
                                                              tmp_path):
    import keras

    keras_fix.remove(["tensorboard_check"])
    callback = keras.callbacks.TensorBoard(str(tmp_path))   # accepted
    model = _problem.build_model()
    x, y = _problem.data(2)
    with pytest.raises(Exception) as failure:
        model.fit(x, y, batch_size=_problem.GLOBAL_BATCH, epochs=1, verbose=0,
                  callbacks=[callback])
    assert type(failure.value).__name__ == "TBNotInstalledError"
    assert model.optimizer.iterations.numpy() >= 1   # after training had begun


def test_with_tensorboard_the_callbacks_are_created_and_write(tf, fix_parts, tmp_path):
    import keras

    keras_fix.apply(["tensorboard_check"])
    model = _problem.build_model()
    x, y = _problem.data(2)
    model.fit(x, y, batch_size=_problem.GLOBAL_BATCH, epochs=1, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(tmp_path / "keras")),
                         keras_dp.callbacks.TensorBoard(str(tmp_path / "keras_dp"))])
    for name in ("keras", "keras_dp"):
        assert os.listdir(tmp_path / name / "train"), name
    assert np.isfinite(model.get_weights()[0]).all()


def _extras():
    """setup.py's extras_require, its names resolved (read, not run)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    names = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
             for target in node.targets
             if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant)}
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "setup")
    extras = next(k.value for k in call.keywords if k.arg == "extras_require")
    return {key.value: [names[v.id] if isinstance(v, ast.Name) else v.value for v in value.elts]
            for key, value in zip(extras.keys, extras.values)}


def test_every_tensorflow_extra_brings_tensorboard():
    extras = _extras()
    for extra in ("cpu", "gpu", "tf", "tensorboard"):
        assert any(r.startswith("tensorboard>=") for r in extras[extra]), (extra, extras[extra])
