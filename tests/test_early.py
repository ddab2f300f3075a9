"""keras_dp.early: tensors and datasets made before keras_dp.scope() on several workers."""

import json
import sys

import numpy as np
import pytest

from _multiproc import free_ports, run_python, run_workers

from keras_dp import keras_fix

#: Every part but early_collectives (KERAS_DP_KERAS_FIX takes a list of allowed parts).
WITHOUT_EARLY = ",".join(part for part in keras_fix.PARTS if part != "early_collectives")


def _last_json(output):
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.multiprocess
def test_datasets_and_tensors_before_the_strategy_train_on_two_workers():
    results = run_workers("early_worker.py", 2, timeout=240)
    for result in results:
        result.check()
    outs = [_last_json(r.output) for r in results]
    for index, out in enumerate(outs):
        assert "error" not in out, out["error"]
        assert out["kind"] == "multi_worker_mirrored"
        assert out["workers"] == 2 and out["index"] == index
        assert out["tf_imported_by_keras_dp"] is False   # import keras_dp stays light
        assert out["offset"] == 3.0
        assert out["loss"][1] < out["loss"][0]
        assert np.isfinite(out["evaluate"])
    for a, b in zip(outs[0]["weights"], outs[1]["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for result in results:   # TensorFlow's "may cause error" warning is not shown
        assert "Enabling collective ops after program startup" not in result.output


@pytest.mark.multiprocess
def test_without_the_part_the_program_gets_the_startup_error():
    a, b = free_ports(2)
    result = run_python([f"tests/workers/early_worker.py"], env={
        "KERAS_DP_WORKERS": f"127.0.0.1:{a},127.0.0.1:{b}", "KERAS_DP_TASK_INDEX": "0",
        "KERAS_DP_KERAS_FIX": WITHOUT_EARLY})
    assert result.returncode == 0, result.stderr[-3000:]
    out = _last_json(result.stdout)
    assert "already started its runtime" in out["error"]
    assert "Import keras_dp before the program's first TensorFlow op" in out["error"]


@pytest.mark.multiprocess
def test_single_process_programs_are_not_touched():
    code = ("import keras_dp, tensorflow as tf; from keras_dp import early; "
            "tf.constant(1.0) + 1; print(early.is_set_up(), keras_dp.scope().kind)")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "default"]


@pytest.mark.multiprocess
def test_keras_dp_commands_do_not_set_up_a_worker_runtime():
    # keras-dp env imports TensorFlow; in a 2-worker environment it must
    # neither start the worker's server nor wait for the peer.
    a, b = free_ports(2)
    code = ("import sys; from keras_dp import cli, early; "
            "code = cli.main(['env']); print('SETUP', early.is_set_up()); sys.exit(code)")
    result = run_python(["-c", code], env={
        "KERAS_DP_WORKERS": f"127.0.0.1:{a},127.0.0.1:{b}", "KERAS_DP_TASK_INDEX": "1"},
        timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SETUP False" in result.stdout


@pytest.mark.multiprocess
def test_a_bad_environment_is_left_for_scope_to_report():
    code = ("import keras_dp, tensorflow as tf; from keras_dp import early\n"
            "try:\n    keras_dp.scope()\nexcept ValueError as exc:\n"
            "    print(early.is_set_up(), type(exc).__name__)")
    result = run_python(["-c", code], env={"TF_CONFIG": "{not json"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "ClusterConfigError"]


@pytest.mark.multiprocess
def test_a_peer_that_never_starts_is_named_at_the_first_op():
    a, b = free_ports(2)
    result = run_python(["tests/workers/early_worker.py"], env={
        "KERAS_DP_WORKERS": f"127.0.0.1:{a},127.0.0.1:{b}", "KERAS_DP_TASK_INDEX": "0",
        "KERAS_DP_STARTUP_TIMEOUT": "12"}, timeout=150)
    assert result.returncode == 77, (result.returncode, result.stderr[-3000:])
    assert "worker 1" in result.stderr and f"127.0.0.1:{b}" in result.stderr
    assert "Traceback" not in result.stderr


def test_startup_timeout_variable_is_checked():
    from keras_dp import early
    from keras_dp.errors import ConfigError

    assert early.startup_timeout({}) == 120.0
    assert early.startup_timeout({"KERAS_DP_STARTUP_TIMEOUT": "30"}) == 30.0
    assert early.startup_timeout({"KERAS_DP_STARTUP_TIMEOUT": "0"}) is None
    with pytest.raises(ConfigError, match="KERAS_DP_STARTUP_TIMEOUT"):
        early.startup_timeout({"KERAS_DP_STARTUP_TIMEOUT": "soon"})
