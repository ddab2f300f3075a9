"""The keras-dp command: tf-config, env, error handling."""

import json
import re
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


@pytest.mark.multiprocess
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
    monkeypatch.setattr(_tf_check.importlib.util, "find_spec", lambda name: None)
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


@pytest.mark.parametrize("command", ["train", "launch", "env", "tf-config", "generate"])
def test_every_option_says_what_it_does_and_no_empty_default(command):
    import argparse

    from keras_dp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices[command].format_help()
    undocumented = [a.option_strings for a in sub.choices[command]._actions
                    if a.option_strings and not a.help]
    assert not undocumented
    assert "(default: None)" not in text and "(default: False)" not in text
    assert re.search(r"\(default[^)]*\) \(default", text) is None   # said twice


def test_launch_help_lists_the_exit_codes_and_the_stop_grace(capsys):
    from keras_dp.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["launch", "--help"])
    text = capsys.readouterr().out
    assert all(f"{code} " in text for code in (75, 76, 77)) and "SIGSTOP" in text


# -- TensorFlow's start-up notices (keras_dp.launcher.quiet) ---------------------------------

ABSL_LINE = ("WARNING: All log messages before absl::InitializeLog() is called are written "
             "to STDERR")
ONEDNN_LINE = ("I0000 00:00:1796204389.176111    4028 port.cc:153] oneDNN custom operations "
               "are on. You may see slightly different numerical results due to floating-point "
               "round-off errors from different computation orders. To turn them off, set the "
               "environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")
NOTICE_WORDS = ("absl::InitializeLog", "oneDNN custom operations")


def test_the_notices_are_recognised_and_nothing_else():
    from keras_dp.launcher.quiet import is_notice

    assert is_notice(ABSL_LINE + "\n") and is_notice(ONEDNN_LINE)
    assert is_notice("E0000 00:00:1.2    5253 util.cc:131] oneDNN supports DT_INT32 only on "
                     "platforms with AVX-512. Falling back to the default Eigen-based "
                     "implementation if present.")
    assert is_notice("2026-01-01 12:00:00.1: E external/local_xla/xla/stream_executor/cuda/"
                     "cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
                     "register factory for plugin cuDNN when one has already been registered")
    for line in ("Traceback (most recent call last):",
                 "W0000 00:00:1.2  4873 dataset.cc:997] Input of GeneratorDatasetOp::Dataset "
                 "will not be optimized",
                 "E0000 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)",
                 "WARNING: something else"):
        assert not is_notice(line), line


def test_filtered_stderr_drops_the_notices_written_to_the_descriptor(capfd):
    import os

    from keras_dp.launcher.quiet import filtered_stderr

    with filtered_stderr():
        os.write(2, f"{ABSL_LINE}\n{ONEDNN_LINE}\nkept line\n".encode())
    os.write(2, f"{ABSL_LINE}\n".encode())  # after the block: not filtered
    assert capfd.readouterr().err == f"kept line\n{ABSL_LINE}\n"


def test_the_worker_output_hides_notices_but_the_log_keeps_them():
    import io
    import threading

    from keras_dp.launcher.output import WorkerOutput
    from keras_dp.launcher.quiet import is_notice

    shown, log = io.StringIO(), io.StringIO()
    output = WorkerOutput(1, threading.Lock(), log_file=log, hide=is_notice)
    output.follow(io.BytesIO(f"{ABSL_LINE}\n{ONEDNN_LINE}\nstep 1\n".encode()), shown)
    output.join()
    assert shown.getvalue() == "[worker 1] step 1\n"
    assert output.tail() == ["step 1"]
    assert log.getvalue() == f"{ABSL_LINE}\n{ONEDNN_LINE}\nstep 1\n"


def test_the_launcher_is_quiet_unless_the_user_set_the_level():
    from keras_dp.launcher import Launcher

    assert Launcher(["w.py"], 2, env={}).quiet
    assert not Launcher(["w.py"], 2, env={"TF_CPP_MIN_LOG_LEVEL": "0"}).quiet
    assert not Launcher(["w.py"], 2, env={}, quiet=False).quiet


def _without_level(extra=None):
    env = base_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")
    env.update(extra or {})
    return env


@pytest.mark.multiprocess
def test_env_hides_the_start_up_notices_unless_the_user_set_the_level():
    quiet = subprocess.run([sys.executable, "-m", "keras_dp", "env"], env=_without_level(),
                           capture_output=True, text=True, timeout=180)
    assert quiet.returncode == 0, quiet.stderr
    assert not [w for w in NOTICE_WORDS if w in quiet.stderr + quiet.stdout], quiet.stderr
    chosen = subprocess.run([sys.executable, "-m", "keras_dp", "env", "--json"],
                            env=_without_level({"TF_CPP_MIN_LOG_LEVEL": "0"}),
                            capture_output=True, text=True, timeout=180)
    assert chosen.returncode == 0, chosen.stderr
    # The user's choice (TF 2.20 prints only the oneDNN notice, 2.21 both).
    assert any(w in chosen.stderr for w in NOTICE_WORDS), chosen.stderr
    json.loads(chosen.stdout)


@pytest.mark.multiprocess
def test_launch_hides_the_workers_start_up_notices(tmp_path):
    code = "import tensorflow as tf; print('imported', tf.__version__, flush=True)"
    result = subprocess.run(
        [sys.executable, "-m", "keras_dp", "launch", "-n", "2", "--log-dir", str(tmp_path),
         "--", sys.executable, "-c", code], env=_without_level(), capture_output=True,
        text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "[worker 0] imported" in result.stdout and "[worker 1] imported" in result.stdout
    assert not [w for w in NOTICE_WORDS if w in result.stderr + result.stdout], result.stderr
    log = (tmp_path / "worker-1.log").read_text()
    # The workers' TensorFlow, whichever wheel (tensorflow, tensorflow-cpu, ...) holds it.
    tf_version = re.search(r"\[worker 1\] imported (\d+)\.(\d+)", result.stdout)
    if tuple(int(p) for p in tf_version.groups()) >= (2, 21):
        # The log file keeps every line (TF 2.20 prints none at level 1: its notices
        # go through TensorFlow's own logging, which the level silences).
        assert all(w in log for w in NOTICE_WORDS), log
