"""examples/ray/train_ray.py: keras_dp inside Ray Train's TensorflowTrainer.

A local Ray cluster on 127.0.0.1 (no dashboard, no usage reporting) runs
two training workers; Ray sets TF_CONFIG in each, keras_dp builds the
MultiWorkerMirroredStrategy from it and `model.fit` runs with Keras 3.
Needs Ray: `pip install -e ".[cpu,test,ray]"` (CI installs the `ray` extra).
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from _multiproc import ROOT, base_env

TRAIN_RAY = os.path.join(ROOT, "examples", "ray", "train_ray.py")


@pytest.mark.multiprocess
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason='Ray is not installed (pip install -e ".[ray]")')
def test_ray_tensorflow_trainer_two_workers(tf, tmp_path):
    # No usage reporting; every worker's lines in the output (no deduplication).
    # The example itself keeps its local Ray on 127.0.0.1.
    env = base_env({"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"})
    proc = subprocess.Popen(
        [sys.executable, TRAIN_RAY, "--num-workers", "2", "--steps", "6", "--epochs", "2",
         "--batch-size", "4", "--seq-len", "64", "--no-xla",
         "--storage-path", str(tmp_path / "results")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError("train_ray.py still running after 400 s:\n" + output[-6000:])
    assert proc.returncode == 0, output[-6000:]

    # keras_dp built the strategy from Ray's TF_CONFIG, with loopback addresses.
    chief = re.search(r"keras_dp under Ray: MultiWorkerMirroredStrategy: 2 replica\(s\), "
                      r"2 worker\(s\), this is worker 0 \(chief\); cluster from tf_config: "
                      r"(\S+), (\S+); global batch 8", output)
    assert chief, output[-6000:]
    assert all(address.startswith("127.0.0.1:") for address in chief.groups())
    # Both workers trained through model.fit and ended with the same weights.
    checksums = dict(re.findall(r"keras_dp worker (\d): weights checksum ([\d.-]+)", output))
    assert sorted(checksums) == ["0", "1"] and checksums["0"] == checksums["1"]

    result = json.loads(re.search(r"^result: (.*)$", output, re.M).group(1))
    metrics = result["metrics"]
    assert (metrics["epoch"], metrics["workers"], metrics["replicas"]) == (2, 2, 2)
    assert metrics["loss"] < 5.2  # from ln(256) = 5.55
    import keras

    import keras_dp.models  # noqa: F401  (registers the LM)

    model = keras.saving.load_model(os.path.join(result["checkpoint"], "model.keras"))
    assert model.seq_len == 64
