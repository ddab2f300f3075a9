"""Shared test set-up.

The pytest process splits its CPU into 4 logical devices (CPU:0-3) before
TensorFlow starts, so in-process tests can build strategies with 1, 2 or 4
replicas. Tests that need their own process configuration (a different
number of logical CPUs, a multi-worker strategy) run in subprocesses; see
`tests/_multiproc.py`.

Markers (registered in pytest.ini):
  multiprocess: starts several TensorFlow processes (slower; `-m multiprocess`
      selects them, `-m "not multiprocess"` skips them). CI runs them all.
  bench, soak: the benchmarks' smoke runs and the soak's trials (harness
      end to end; CI's oldest-versions stage skips them, see .ci/run).
"""

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

NUM_LOGICAL_CPUS = 4


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
