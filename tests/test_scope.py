"""keras_dp.scope() end to end, each case in a fresh process."""

import json

import pytest

from _multiproc import free_ports, run_python

pytestmark = pytest.mark.multiprocess

WORKER = "tests/workers/scope_checks.py"


def run_case(case, env=None):
    result = run_python([WORKER, case], env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_scope_with_cpu_replicas():
    out = run_case("cpu_replicas")
    assert out["kind"] == "mirrored"
    assert out["replicas"] == 2 and out["global_batch"] == 16
    assert out["workers"] == 1 and out["chief"] is True
    assert out["mirrored_variable"] == "MirroredVariable"
    assert out["same_strategy"] is True
    assert "already called in this process" in out["conflict_error"]
    assert "does not divide evenly over 2 replicas" in out["batch_error"]


def test_collective_ops_after_startup_are_explained():
    a, b = free_ports(2)
    out = run_case("collectives_after_startup", env={
        "KERAS_DP_WORKERS": f"127.0.0.1:{a},127.0.0.1:{b}", "KERAS_DP_TASK_INDEX": "0"})
    assert "already started its runtime" in out["error"]
    assert "keras_dp.launch" in out["error"]


def test_bad_environment_is_a_value_error():
    out = run_case("bad_environment", env={"TF_CONFIG": "{not json"})
    assert out["type"] == "ClusterConfigError"
    assert out["error"].startswith("TF_CONFIG: is not valid JSON")
