"""Strategy selection, in-process on 4 logical CPU devices (see conftest)."""

import pytest

import keras_dp
from keras_dp import multi_worker, strategy as strategy_lib
from keras_dp.cluster import ClusterInfo, resolve_cluster
from keras_dp.errors import ConfigError, StrategyError

SINGLE = resolve_cluster({})
TWO_WORKERS = resolve_cluster({"KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "0"})
# resolve_cluster refuses a ps job (ClusterConfigError); a ClusterInfo built by hand
# still meets choose_kind's own refusal.
WITH_PS = ClusterInfo(source="tf_config", cluster={"worker": ("a:1",), "ps": ("p:1",)})
EVALUATOR = resolve_cluster({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"], '
                                          '"evaluator": ["e:1"]}, '
                                          '"task": {"type": "evaluator", "index": 0}}'})

CHOICES = [
    ("single_cpu", SINGLE, dict(num_gpus=0), "default"),
    ("one_gpu", SINGLE, dict(num_gpus=1), "one_device"),
    ("two_gpus", SINGLE, dict(num_gpus=2), "mirrored"),
    ("cpu_replicas", SINGLE, dict(num_gpus=0, cpu_replicas=2), "mirrored"),
    ("gpus_win_over_cpu_replicas", SINGLE, dict(num_gpus=1, cpu_replicas=2), "one_device"),
    ("two_workers", TWO_WORKERS, dict(num_gpus=0), "multi_worker_mirrored"),
    ("two_workers_with_gpus", TWO_WORKERS, dict(num_gpus=4), "multi_worker_mirrored"),
    ("tpu", SINGLE, dict(num_gpus=0, tpu="local"), "tpu"),
    ("colab_tpu", TWO_WORKERS, dict(num_gpus=0, tpu=""), "tpu"),
    ("evaluator", EVALUATOR, dict(num_gpus=1), "default"),
]


@pytest.mark.parametrize("cluster,kwargs,kind", [c[1:] for c in CHOICES],
                         ids=[c[0] for c in CHOICES])
def test_auto_choice(cluster, kwargs, kind):
    chosen, reason = strategy_lib.choose_kind("auto", cluster, **kwargs)
    assert chosen == kind
    assert reason


def test_parameter_server_cluster_is_explained():
    with pytest.raises(StrategyError, match="ParameterServerStrategy"):
        strategy_lib.choose_kind("auto", WITH_PS, num_gpus=0)


def test_unknown_kind_lists_accepted_values():
    with pytest.raises(ConfigError) as caught:
        strategy_lib.normalize_kind("horovod")
    message = str(caught.value)
    for kind in strategy_lib.KINDS:
        assert kind in message
    assert message.endswith("Received: kind=horovod")


@pytest.mark.parametrize("alias,kind", [("multi-worker", "multi_worker_mirrored"),
                                        ("MWMS", "multi_worker_mirrored"),
                                        ("one-device", "one_device"), (None, "auto")])
def test_aliases(alias, kind):
    assert strategy_lib.normalize_kind(alias) == kind


@pytest.mark.parametrize("gpus,rank,size,expected", [
    (8, 0, 1, None), (8, 1, 2, (4, 8)), (8, 3, 4, (6, 8)), (4, 0, 4, (0, 1)),
    (2, 1, 4, None), (0, 0, 2, None), (3, 1, 2, (1, 2)),
])
def test_gpu_slice(gpus, rank, size, expected):
    assert strategy_lib.gpu_slice(gpus, rank, size) == expected


@pytest.mark.parametrize("replicas", [2, 4])
def test_mirrored_over_virtual_cpus(tf, replicas):
    strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                     devices=[f"/cpu:{i}" for i in range(replicas)])
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == replicas
    result = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
        "SUM", tf.constant(1.0)))
    assert float(strategy.experimental_local_results(result)[0]) == replicas


def test_auto_with_cpu_replicas(tf, clean_environ):
    strategy = keras_dp.get_strategy(cluster=SINGLE, cpu_replicas=4)
    assert strategy_lib.strategy_kind(strategy) == "mirrored"
    assert strategy.num_replicas_in_sync == 4


def test_cpu_replicas_from_environment(tf):
    strategy = keras_dp.get_strategy(cluster=SINGLE, environ={"KERAS_DP_CPU_REPLICAS": "4"})
    assert strategy.num_replicas_in_sync == 4
    with pytest.raises(ConfigError, match="KERAS_DP_CPU_REPLICAS"):
        keras_dp.get_strategy(cluster=SINGLE, environ={"KERAS_DP_CPU_REPLICAS": "four"})


@pytest.mark.parametrize("raw, expected", [
    (None, 1), ("", 1), (" ", 1), ("1", 1), ("4", 4), (" 2 ", 2),
    ("four", "not a whole number"), ("2.5", "not a whole number"), ("0", "at least 1"),
    ("-3", "at least 1"), ("1_000", "not a whole number"),
])
def test_requested_cpu_replicas_reads_the_variable_or_names_it(raw, expected):
    environ = {} if raw is None else {"KERAS_DP_CPU_REPLICAS": raw}
    if isinstance(expected, int):
        assert strategy_lib.requested_cpu_replicas(environ) == expected
        return
    with pytest.raises(ConfigError, match=expected) as caught:
        strategy_lib.requested_cpu_replicas(environ)
    assert f"Received: KERAS_DP_CPU_REPLICAS={raw}" in str(caught.value)


def test_auto_single_device_is_default_strategy(tf):
    strategy = keras_dp.get_strategy(cluster=SINGLE, environ={})
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_one_device(tf):
    strategy = keras_dp.get_strategy("one_device", cluster=SINGLE, environ={})
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)


def test_cpu_replicas_after_startup_is_explained(tf):
    tf.constant(1.0)  # the runtime is running (with 4 logical CPUs)
    with pytest.raises(StrategyError) as caught:
        keras_dp.get_strategy(cluster=SINGLE, cpu_replicas=2, environ={})
    assert "before" in str(caught.value) and "keras_dp.launch" in str(caught.value)


def test_single_process_kind_refused_for_multi_worker_cluster(tf):
    with pytest.raises(StrategyError, match="2 workers"):
        keras_dp.get_strategy("mirrored", cluster=TWO_WORKERS, environ={})


@pytest.mark.parametrize("name,cls", [("nccl", "NcclAllReduce"),
                                      ("hierarchical_copy", "HierarchicalCopyAllReduce"),
                                      ("reduce_to_one_device", "ReductionToOneDevice")])
def test_cross_device_ops(tf, name, cls):
    strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE, devices=["/cpu:0", "/cpu:1"],
                                     cross_device_ops=name)
    assert type(strategy.extended._cross_device_ops).__name__ == cls


def test_bad_communication_options(tf):
    with pytest.raises(ConfigError, match="auto, ring, nccl"):
        multi_worker.communication_options("gloo")
    with pytest.raises(ConfigError, match="bytes_per_pack"):
        multi_worker.communication_options("ring", bytes_per_pack=-1)
    with pytest.raises(ConfigError, match="collective_timeout"):
        multi_worker.communication_options("ring", timeout_seconds=0)
    options = multi_worker.communication_options("ring", timeout_seconds=30,
                                                 bytes_per_pack=1 << 20)
    assert options.timeout_seconds == 30 and options.bytes_per_pack == 1 << 20
    with pytest.raises(ConfigError, match="nccl, hierarchical_copy"):
        keras_dp.get_strategy("mirrored", cluster=SINGLE, devices=["/cpu:0", "/cpu:1"],
                              cross_device_ops="allgather")


def test_tpu_requested_from_environment():
    assert strategy_lib.tpu_requested(None, {}) is None
    assert strategy_lib.tpu_requested("local", {}) == "local"
    assert strategy_lib.tpu_requested(None, {"TPU_NAME": "my-tpu"}) == "my-tpu"
    assert strategy_lib.tpu_requested(None, {"COLAB_TPU_ADDR": "10.0.0.2:8470"}) == ""


def _sum_over_replicas(tf, strategy):
    result = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
        "SUM", tf.constant(1.0)))
    return float(strategy.experimental_local_results(result)[0])


#: Mirrored strategies over 2, then 4, then 2 logical CPUs, each running an all-reduce.
_SIZES = (2, 4, 2)


def test_strategies_over_other_devices_in_one_process(tf):
    """Keras-layer part collective_keys: each MirroredStrategy keras_dp makes has its own keys."""
    for size in _SIZES:
        strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                         devices=[f"/cpu:{i}" for i in range(size)])
        assert _sum_over_replicas(tf, strategy) == size


@pytest.mark.slow
def test_without_the_part_strategies_over_other_devices_collide():
    # In a process of its own: the collision aborts TensorFlow's collectives there.
    from _multiproc import run_python

    code = (
        "import tensorflow as tf, keras_dp\n"
        "from keras_dp.keras_fix import collective_keys\n"
        "collective_keys.KEYS_PER_STRATEGY = 0   # TensorFlow's numbering\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 4)\n"
        f"for size in {_SIZES}:\n"
        "    s = keras_dp.get_strategy('mirrored', devices=[f'/cpu:{i}' for i in range(size)])\n"
        "    s.run(lambda: tf.distribute.get_replica_context().all_reduce(\n"
        "        'SUM', tf.constant(1.0)))\n")
    result = run_python(["-c", code], timeout=240)
    assert result.returncode != 0
    assert "group with size" in result.stderr, result.stderr[-3000:]
