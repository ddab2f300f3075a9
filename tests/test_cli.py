"""The keras-dp command: tf-config, env, error handling."""

import json
import subprocess
import sys

import pytest

from _multiproc import base_env

import keras_dp
from keras_dp import _tf_check


def keras_dp_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "keras_dp", *args], env=base_env(env),
                          capture_output=True, text=True, timeout=timeout)


def test_tf_config_prints_one_json_line():
    result = keras_dp_cli("tf-config", env={
        "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"cluster": {"worker": ["n1:8888", "n2:8888"]},
                                    "task": {"type": "worker", "index": 1}}


def test_tf_config_without_cluster():
    result = keras_dp_cli("tf-config")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"cluster": {}, "task": {}}


@pytest.mark.parametrize("env,words", [
    ({"TF_CONFIG": "{bad"}, "TF_CONFIG: is not valid JSON"),
    ({"KERAS_DP_WORKERS": "a:1,b:1"}, "KERAS_DP_TASK_INDEX"),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}, "adds up to 2 tasks but SLURM_STEP_NUM_TASKS=3"),
])
def test_bad_environment_exits_2_without_traceback(env, words):
    result = keras_dp_cli("tf-config", env=env)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_env_report_without_devices():
    result = keras_dp_cli("env", "--no-devices", env={
        "KERAS_DP_WORKERS": "127.0.0.1:5000,127.0.0.1:5001", "KERAS_DP_TASK_INDEX": "1"})
    assert result.returncode == 0, result.stderr
    assert "Cluster source : explicit" in result.stdout
    assert "127.0.0.1:5001  <- this process" in result.stdout


def test_env_report_with_devices_as_json():
    result = keras_dp_cli("env", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    import keras
    import tensorflow

    assert report["versions"]["tensorflow"] == tensorflow.__version__
    assert report["versions"]["keras"] == keras.__version__
    assert report["devices"]["cpu"] >= 1
    assert report["strategy"]["auto"] == "default"
    assert report["cluster"]["source"] == "single"
    assert "metric_reduction" in report["keras_fix"] and "symbolic_build" in report["keras_fix"]
    assert "jit_compile='auto' off (CPU only" in report["xla"] and "replica_xla" in report["xla"]


def test_env_bad_input_exit_2():
    result = keras_dp_cli("env", "--no-devices", env={"KERAS_DP_CLUSTER": "yarn"})
    assert result.returncode == 2 and "KERAS_DP_CLUSTER" in result.stderr


def test_missing_tensorflow_message(monkeypatch):
    monkeypatch.setattr(_tf_check, "tensorflow_installed", lambda: False)
    with pytest.raises(keras_dp.MissingTensorFlowError) as caught:
        _tf_check.require_tensorflow()
    message = str(caught.value)
    assert "keras-dp[cpu]" in message and "keras-dp[gpu]" in message
    assert "\n" not in message


def test_import_without_tensorflow_fails_with_one_line():
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "try:\n    import keras_dp\nexcept ImportError as e:\n    print('ERR', e)")
    result = subprocess.run([sys.executable, "-c", code], env=base_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("ERR keras_dp needs TensorFlow"), result.stdout + result.stderr


def test_version_and_help():
    assert keras_dp_cli("--version").stdout.strip() == f"keras-dp {keras_dp.__version__}"
    result = keras_dp_cli()
    assert result.returncode == 2 and "tf-config" in result.stdout
