"""The test tiers: the fast tier's guard against TensorFlow subprocesses."""

import os
import subprocess
import sys

import pytest

from conftest import GUARD_DIR, GUARD_VARIABLE


def _child(code, report):
    path = os.pathsep.join([GUARD_DIR, *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
    env = dict(os.environ, PYTHONPATH=path, **{GUARD_VARIABLE: str(report)})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_subprocess_importing_tensorflow_is_refused_and_reported(tmp_path):
    report = tmp_path / "report.txt"
    # keras_dp first: its early set-up's import hook must not bypass the refusal.
    result = _child("import keras_dp, tensorflow", report)
    assert result.returncode == 1
    assert "mark the test @pytest.mark.multiprocess" in result.stderr
    assert report.read_text().strip() == "-c"


def test_a_subprocess_without_tensorflow_runs(tmp_path):
    report = tmp_path / "report.txt"
    result = _child("import importlib.util, keras_dp.cluster; "
                    "print(importlib.util.find_spec('tensorflow') is not None)", report)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert not report.exists()


def test_the_guard_is_on_in_the_fast_tier_only(request):
    assert os.environ.get(GUARD_VARIABLE)
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == GUARD_DIR


@pytest.mark.multiprocess
def test_the_guard_is_off_outside_the_fast_tier():
    assert GUARD_VARIABLE not in os.environ
