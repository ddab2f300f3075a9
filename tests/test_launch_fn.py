"""`keras_dp.launch(fn, num_workers=N)`: functions from a notebook's `__main__`."""

import json
import sys
import textwrap

import numpy as np
import pytest

import _problem
from _multiproc import run_python

pytestmark = pytest.mark.multiprocess

# Run as a script, so `train` and `boom` live in `__main__`, as in a notebook.
NOTEBOOK = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import keras_dp

    def train(steps, scale=1):
        import keras_dp, _problem
        with keras_dp.scope() as ctx:
            model = _problem.build_model()
        model.fit(_problem.distributed_dataset(ctx.strategy, steps), epochs=1,
                  steps_per_epoch=steps, verbose=0, shuffle=False)
        return {"worker": ctx.worker_index, "replicas": ctx.num_replicas * scale,
                "weights": model.get_weights()}

    out = keras_dp.launch(train, num_workers=2, args=(_STEPS,), kwargs={"scale": 1})
    np.savez(sys.argv[1] + "/weights.npz", *out["weights"])

    def boom(n):
        import json, os
        if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
            raise ValueError(f"boom {n}")
        return "fine"

    try:
        keras_dp.launch(lambda n: boom(n), num_workers=2, args=(7,))
        error = None
    except keras_dp.launcher.WorkerError as exc:
        error = {"worker": exc.worker, "returncode": exc.returncode, "text": str(exc),
                 "cause": type(exc.__cause__).__name__, "cause_text": str(exc.__cause__)}
    json.dump({"worker": out["worker"], "replicas": out["replicas"], "error": error,
               "tensorflow_here": "tensorflow" in sys.modules},
              open(sys.argv[1] + "/result.json", "w"))
''').replace("_STEPS", str(_problem.STEPS))


@pytest.fixture(scope="module")
def reference_weights(tf):
    _, weights = _problem.train(tf.distribute.get_strategy())
    return weights


def test_launch_runs_a_main_function_on_two_workers_and_reports_errors(tmp_path,
                                                                        reference_weights):
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    done = run_python([str(script), str(tmp_path)], timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # The workers' output reached us, prefixed.
    assert "[launcher] worker 1 started" in done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["worker"] == 0 and result["replicas"] == 2  # the chief's return value
    weights = list(np.load(tmp_path / "weights.npz").values())
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference_weights)) <= 1e-5
    assert not result["tensorflow_here"]  # the "notebook" never started TensorFlow
    error = result["error"]
    assert error["worker"] == 1 and error["returncode"] == 1
    assert error["cause"] == "ValueError" and error["cause_text"] == "boom 7"
    assert "worker 1" in error["text"] and "ValueError: boom 7" in error["text"]
