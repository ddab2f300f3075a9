"""Strategy selection: a name (`"auto"`: README.md, "Strategy rules") to a `tf.distribute` strategy.

The pure part, `choose_kind()`, needs no TensorFlow and is what `keras-dp env` reports.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

from keras_dp.cluster import ClusterInfo, resolve_cluster
from keras_dp.cluster.base import read_int
from keras_dp.envflags import env_flag
from keras_dp.errors import ConfigError, StrategyError
from keras_dp.multi_worker import (STARTUP_EXPLANATION, communication_options,
                                   context_initialized, multi_worker_strategy)

log = logging.getLogger("keras_dp")

KINDS = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
_ALIASES = {
    "multi_worker": "multi_worker_mirrored", "multiworker": "multi_worker_mirrored",
    "mwms": "multi_worker_mirrored", "collective": "multi_worker_mirrored",
    "onedevice": "one_device", "single": "one_device", "mirror": "mirrored",
    "tpu_strategy": "tpu", "off": "default", "none": "default",
}

TPU_VARIABLES = ("KERAS_DP_TPU", "TPU_NAME", "COLAB_TPU_ADDR")
CPU_REPLICAS_VARIABLE = "KERAS_DP_CPU_REPLICAS"
GPU_SPLIT_VARIABLE = "KERAS_DP_GPU_SPLIT"


def requested_cpu_replicas(environ: Mapping[str, str]) -> int:
    """The replicas `KERAS_DP_CPU_REPLICAS` asks for on this process's CPU (1 when unset or
    empty); a value that is not a whole number >= 1 raises an error naming the variable."""
    if not (environ.get(CPU_REPLICAS_VARIABLE) or "").strip():
        return 1
    return read_int(environ, CPU_REPLICAS_VARIABLE, minimum=1,
                    fix=f"set {CPU_REPLICAS_VARIABLE} to 2, 4, ... (or leave it unset: 1)")


def normalize_kind(kind: Optional[str]) -> str:
    """Maps a strategy name (or alias) to one of `KINDS`.

    Raises:
        ConfigError: listing the accepted values for an unknown name.
    """
    value = "auto" if kind is None else str(kind).strip().lower().replace("-", "_")
    value = _ALIASES.get(value, value)
    if value not in KINDS:
        raise ConfigError(
            f"unknown distribution strategy {kind!r}", variable="kind",
            fix=f"use one of: {', '.join(KINDS)}", received=kind)
    return value


def tpu_requested(tpu: Optional[str], environ: Mapping[str, str]) -> Optional[str]:
    """The TPU address to use (`"local"` for a TPU VM), or None for no TPU."""
    if tpu is not None:
        return str(tpu)
    for name in TPU_VARIABLES:
        if environ.get(name):
            return "" if name == "COLAB_TPU_ADDR" else environ[name]
    return None


def gpu_slice(num_gpus: int, local_rank: int, local_size: int) -> Optional[Tuple[int, int]]:
    """This process's even share `(start, stop)` of a node's GPUs, in local-rank order.

    None for one process per node, or fewer GPUs than processes (the launcher bound them).
    """
    if local_size <= 1 or num_gpus < local_size:
        return None
    per_task = num_gpus // local_size
    return local_rank * per_task, (local_rank + 1) * per_task


def choose_kind(kind: str, cluster: ClusterInfo, *, num_gpus: int, cpu_replicas: int = 1,
                tpu: Optional[str] = None) -> Tuple[str, str]:
    """`(kind, reason)`: which strategy `kind` (`"auto"` or one of `KINDS`) means here.

    `num_gpus` counts this process's GPUs (after the node's are split); `tpu` is the TPU or None.

    Raises:
        StrategyError: for a cluster keras_dp cannot train (parameter servers).
    """
    if kind != "auto":
        return kind, "requested explicitly"
    if tpu is not None:
        return "tpu", f"a TPU was requested ({tpu or 'Colab'})"
    if "ps" in cluster.cluster:
        raise StrategyError(
            "the cluster has 'ps' (parameter server) tasks; keras_dp trains "
            "synchronously with MultiWorkerMirroredStrategy. Remove the 'ps' job "
            "from TF_CONFIG, or use tf.distribute.ParameterServerStrategy "
            "directly for asynchronous training.")
    if not cluster.is_training_task:
        return "default", f"this is a {cluster.task_type} task, which does not train"
    if cluster.is_multi_worker:
        return ("multi_worker_mirrored",
                f"{cluster.num_workers} workers in the cluster ({cluster.source})")
    if cpu_replicas > 1 and num_gpus == 0:
        return "mirrored", f"{cpu_replicas} logical CPU devices"
    if num_gpus > 1:
        return "mirrored", f"{num_gpus} local GPUs"
    if num_gpus == 1:
        return "one_device", "one GPU"
    return "default", "one process, no GPU"


def strategy_kind(strategy) -> str:
    """The `KINDS` name of a strategy object (e.g. `"multi_worker_mirrored"`)."""
    import tensorflow as tf

    for cls, kind in ((tf.distribute.MultiWorkerMirroredStrategy, "multi_worker_mirrored"),
                      (tf.distribute.MirroredStrategy, "mirrored"),
                      (tf.distribute.OneDeviceStrategy, "one_device"),
                      (tf.distribute.TPUStrategy, "tpu")):
        if isinstance(strategy, cls):
            return kind
    return "default"


def _cross_device_ops(name, tf):
    if not isinstance(name, str):
        return name  # None or a tf.distribute.CrossDeviceOps instance
    key = name.lower().replace("-", "_")
    ops = {"auto": lambda: None, "nccl": tf.distribute.NcclAllReduce,
           "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce,
           "reduce_to_one_device": tf.distribute.ReductionToOneDevice}
    if key not in ops:
        raise ConfigError("unknown cross-device ops", variable="cross_device_ops",
                          fix=f"use one of: {', '.join(ops)}", received=name)
    return ops[key]()


def apply_gpu_split(cluster: ClusterInfo, environ: Mapping[str, str]) -> int:
    """Restricts this process to its share of the node's GPUs; returns the count used."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    # auto (the default): split unless SLURM bound the GPUs to tasks; or on/off.
    automatic = str(environ.get(GPU_SPLIT_VARIABLE, "auto")).strip().lower() in ("auto", "")
    chosen = gpu_slice(len(gpus), cluster.local_rank, cluster.local_size)
    if (environ.get("SLURM_GPUS_PER_TASK") if automatic
            else not env_flag(GPU_SPLIT_VARIABLE, True, environ)) or chosen is None:
        return len(gpus)
    start, stop = chosen
    selected = gpus[start:stop]
    try:
        if list(tf.config.get_visible_devices("GPU")) != selected:
            tf.config.set_visible_devices(selected, "GPU")
    except RuntimeError:
        raise StrategyError(STARTUP_EXPLANATION.format(
            what=f"giving local process {cluster.local_rank} its GPUs {start}-{stop - 1}"))
    log.info("local process %d of %d uses GPUs %d-%d", cluster.local_rank,
             cluster.local_size, start, stop - 1)
    return len(selected)


def get_strategy(kind: str = "auto", *, cluster: Optional[ClusterInfo] = None,
                 cpu_replicas: Optional[int] = None, devices: Optional[Sequence[str]] = None,
                 tpu: Optional[str] = None, implementation: str = "auto",
                 collective_timeout: Optional[float] = None, bytes_per_pack: int = 0,
                 cross_device_ops: Any = "auto", startup_timeout: Optional[float] = 120.0,
                 heartbeat_timeout: Optional[float] = None,
                 shutdown_timeout: Optional[float] = None,
                 environ: Optional[Mapping[str, str]] = None):
    """Returns the `tf.distribute.Strategy` for `kind` here (README.md, "Strategy rules").

    Args:
        kind: `"auto"` or one of `KINDS`.
        cluster: The resolved cluster (default: resolved from `environ`).
        cpu_replicas: Logical CPU devices, one replica each (default `KERAS_DP_CPU_REPLICAS`).
        devices: Devices for `"mirrored"` or `"one_device"`.
        tpu: `"local"` on a TPU VM, `""` on Colab, else a TPU name or `grpc://` address.
        implementation: Multi-worker collectives: `"auto"`, `"ring"` or `"nccl"`.
        collective_timeout: Seconds before a collective op gives up (None: never).
        bytes_per_pack: All-reduce pack size in bytes (0: automatic).
        cross_device_ops: `"auto"`, `"nccl"`, `"hierarchical_copy"`, `"reduce_to_one_device"`
            or a `tf.distribute.CrossDeviceOps`.
        startup_timeout: Seconds the workers wait for every peer to join (None: forever).
        heartbeat_timeout: Seconds without a heartbeat before a peer is dead.
        shutdown_timeout: Seconds the workers wait for each other at exit.
        environ: Variables to read instead of `os.environ`.

    Returns:
        The strategy, with its parts of `keras_dp.keras_fix` applied.

    Raises:
        ConfigError: an unknown kind or option (the accepted values are listed).
        StrategyError: the strategy cannot be created here, with why.
    """
    import tensorflow as tf

    from keras_dp import early, keras_fix
    from keras_dp.keras_fix import collective_keys

    if cluster is None and environ is None:
        cluster = early.cluster()
    environ = os.environ if environ is None else environ
    kind = normalize_kind(kind)
    cluster = cluster if cluster is not None else resolve_cluster(environ)
    if cpu_replicas is None:
        cpu_replicas = requested_cpu_replicas(environ)
    if cpu_replicas < 1:
        raise ConfigError("must be at least 1", variable="cpu_replicas",
                          received=cpu_replicas, fix="pass cpu_replicas=2 (or more)")
    tpu_address = tpu_requested(tpu, environ) if kind in ("auto", "tpu") else None
    num_gpus = apply_gpu_split(cluster, environ) if tpu_address is None else 0
    cpus = tf.config.list_physical_devices("CPU") if cpu_replicas > 1 else ()
    if cpus and len(tf.config.get_logical_device_configuration(cpus[0]) or ()) != cpu_replicas:
        if context_initialized():
            raise StrategyError(STARTUP_EXPLANATION.format(
                what=f"splitting the CPU into {cpu_replicas} logical devices"))
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)])
    chosen, reason = choose_kind(kind, cluster, num_gpus=num_gpus,
                                 cpu_replicas=cpu_replicas, tpu=tpu_address)
    log.info("keras_dp strategy: %s (%s)", chosen, reason)

    if chosen == "tpu":
        strategy = _tpu_strategy(tpu_address or "")
    elif chosen == "multi_worker_mirrored":
        options = communication_options(implementation, collective_timeout, bytes_per_pack)
        if not cluster.is_multi_worker:
            log.info("MultiWorkerMirroredStrategy requested for a single worker")
            strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        elif cpu_replicas > 1:
            raise StrategyError(
                f"cpu_replicas={cpu_replicas} with {cluster.num_workers} workers: "
                "MultiWorkerMirroredStrategy uses one CPU device per worker. Use more "
                "workers (keras-dp launch -n N) or cpu_replicas=1.")
        else:
            strategy = multi_worker_strategy(
                cluster, options=options, startup_timeout=startup_timeout,
                heartbeat_timeout=heartbeat_timeout, shutdown_timeout=shutdown_timeout)
    elif cluster.is_multi_worker and cluster.is_training_task and chosen != "default":
        raise StrategyError(
            f"strategy {chosen!r} trains in one process, but the cluster has "
            f"{cluster.num_workers} workers ({cluster.source}). Use kind='auto' or "
            "'multi_worker_mirrored', or run a single process.")
    elif chosen == "mirrored":
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU" if num_gpus else "CPU")]
        strategy = collective_keys.mirrored(list(devices), _cross_device_ops(cross_device_ops, tf))
    elif chosen == "one_device":
        strategy = tf.distribute.OneDeviceStrategy(
            devices[0] if devices else "/gpu:0" if num_gpus else "/cpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    keras_fix.apply(keras_fix.parts_for(strategy))
    return strategy


def _tpu_strategy(address: str):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise StrategyError(
            f"could not connect to the TPU {address or '(Colab default)'!r}: {exc}. On a "
            "Colab TPU runtime use tpu='' (or 'local' on TPU VMs); elsewhere pass the "
            "TPU name or grpc:// address.") from None
    return tf.distribute.TPUStrategy(resolver)
