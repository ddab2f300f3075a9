"""Shared test set-up.

The pytest process splits its CPU into 4 logical devices (CPU:0-3) before
TensorFlow starts, so in-process tests can build strategies with 1, 2 or 4
replicas. Tests that need their own process configuration (a different
number of logical CPUs, a multi-worker strategy) run in subprocesses; see
`tests/_multiproc.py`.

Test tiers (markers registered in pytest.ini):
  fast (no marker): plain `python -m pytest` (pytest.ini's addopts select
      `not slow and not multiprocess`); in-process only, a few minutes.
  multiprocess: starts TensorFlow in subprocesses (workers, launches, CLI
      runs). `slow`: in-process but too slow for the fast tier. Both run
      with `python -m pytest -m "slow or multiprocess"` (a -m on the command
      line replaces the addopts one). CI runs both tiers.
  bench, soak: the benchmarks' smoke runs and the soak's trials (also
      multiprocess; CI's oldest-versions stage skips them, see .ci/run).

A fast-tier test that starts a Python process importing TensorFlow fails
(`_fast_tier_guard`, with tests/_fast_tier/sitecustomize.py in the child).
"""

import os
import shutil
import sys
import tempfile

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

NUM_LOGICAL_CPUS = 4
#: Markers that take a test out of the fast tier.
OUTSIDE_FAST_TIER = ("multiprocess", "slow")
GUARD_DIR = os.path.join(TESTS_DIR, "_fast_tier")
GUARD_VARIABLE = "KDP_FAST_TIER_REPORT"


def pytest_collection_modifyitems(config, items):
    """The benchmarks' smoke runs and the soak's trials start workers: `multiprocess` too."""
    for item in items:
        if (item.get_closest_marker("bench") or item.get_closest_marker("soak")) and \
                not item.get_closest_marker("multiprocess"):
            item.add_marker(pytest.mark.multiprocess)


_ORIGINAL_PYTHONPATH = os.environ.get("PYTHONPATH")
_REPORTS = tempfile.mkdtemp(prefix="keras_dp-fast-tier-")


def pytest_unconfigure(config):
    shutil.rmtree(_REPORTS, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Turns the guard on for a fast-tier test (before its fixtures, module-scoped too)."""
    os.environ.pop(GUARD_VARIABLE, None)
    paths = [p for p in [_ORIGINAL_PYTHONPATH] if p]
    item.fast_tier_report = None
    if not any(item.get_closest_marker(name) for name in OUTSIDE_FAST_TIER):
        item.fast_tier_report = os.path.join(_REPORTS, f"{id(item)}.txt")
        os.environ[GUARD_VARIABLE] = item.fast_tier_report
        paths.insert(0, GUARD_DIR)
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        os.environ.pop("PYTHONPATH", None)


@pytest.fixture(autouse=True)
def _fast_tier_guard(request):
    """Fails a fast-tier test whose subprocesses import TensorFlow (a worker run)."""
    yield
    report = getattr(request.node, "fast_tier_report", None)
    if report and os.path.exists(report):
        with open(report, encoding="utf-8") as handle:
            commands = "; ".join(handle.read().splitlines())
        pytest.fail(f"this fast-tier test started Python processes that import TensorFlow "
                    f"({commands}): mark it @pytest.mark.multiprocess (the other tier)",
                    pytrace=False)


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, with the CPU split into 4 logical devices."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    if not tf.config.get_logical_device_configuration(cpus[0]):
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)
    return tf


@pytest.fixture
def clean_environ(monkeypatch):
    """Removes the cluster variables, every KERAS_DP_ setting and the device ones from os.environ."""
    from keras_dp.cluster import cluster_variables

    names = set(cluster_variables()) | {"TPU_NAME", "COLAB_TPU_ADDR", "SLURM_GPUS_PER_TASK"}
    for name in list(os.environ):
        if name in names or name.startswith("KERAS_DP_"):
            monkeypatch.delenv(name, raising=False)
    return os.environ
