"""MultiWorkerMirroredStrategy's creation: coordination time limits, one per process."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from keras_dp.cluster import ClusterInfo
from keras_dp.errors import ConfigError, StrategyError

IMPLEMENTATIONS = ("auto", "ring", "nccl")
_lock = threading.Lock()
_multi_worker: Dict[str, Any] = {}

STARTUP_EXPLANATION = (
    "TensorFlow already started its runtime in this process (something created a "
    "tensor, listed logical devices or built a model before the strategy), and {what} "
    "can only be set up before that. Import keras_dp before the program's first "
    "TensorFlow op (keras_dp then sets the multi-worker runtime up when TensorFlow is "
    "imported), or create the strategy first: call keras_dp.scope() (or "
    "keras_dp.get_strategy()) before any other TensorFlow or Keras call. In a "
    "notebook, restart the runtime and run the keras_dp cell first, or use "
    "keras_dp.launch(fn, num_workers=N), which runs the training function in fresh "
    "worker processes."
)


def context_initialized() -> bool:
    """Whether TensorFlow's eager context already started (devices are fixed then)."""
    from tensorflow.python.eager import context

    return bool(getattr(context.context(), "_initialized", False))


def communication_options(implementation: str = "auto", timeout_seconds: Optional[float] = None,
                          bytes_per_pack: int = 0):
    """`tf.distribute.experimental.CommunicationOptions` with checked values."""
    import tensorflow as tf

    key = str(implementation).strip().lower()
    if key not in IMPLEMENTATIONS:
        raise ConfigError("unknown collective implementation", variable="implementation",
                          fix=f"use one of: {', '.join(IMPLEMENTATIONS)}",
                          received=implementation)
    if bytes_per_pack is None or int(bytes_per_pack) < 0:
        raise ConfigError("must be 0 (automatic) or a positive number of bytes",
                          variable="bytes_per_pack", received=bytes_per_pack,
                          fix="pass bytes_per_pack=0 or e.g. 32 * 1024 * 1024")
    if timeout_seconds is not None and float(timeout_seconds) <= 0:
        raise ConfigError("must be a positive number of seconds or None",
                          variable="collective_timeout", received=timeout_seconds,
                          fix="pass e.g. collective_timeout=300, or None for no limit")
    impl = getattr(tf.distribute.experimental.CommunicationImplementation, key.upper())
    return tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=int(bytes_per_pack), timeout_seconds=timeout_seconds,
        implementation=impl)


def cluster_spec(cluster: ClusterInfo):
    """`cluster`'s jobs and addresses as a `tf.train.ClusterSpec`."""
    from tensorflow.python.training import server_lib

    return server_lib.ClusterSpec({job: list(tasks) for job, tasks in cluster.cluster.items()})


def configure_coordination(cluster: ClusterInfo, *, startup_timeout: Optional[float],
                           heartbeat_timeout: Optional[float],
                           shutdown_timeout: Optional[float], replace: bool = False) -> None:
    """Sets up TF's coordination service with time limits, before MWMS (docs/fault_tolerance.md).

    One already in place is kept unless `replace` (keras_dp's early set-up)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    from keras_dp import fault

    ctx = context.context()
    if ctx.coordination_service is not None and not replace:
        return
    spec = cluster_spec(cluster)
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    to_ms = lambda seconds: int(seconds * 1000) if seconds else 0  # noqa: E731
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=to_ms(fault.register_timeout(startup_timeout)),
        heartbeat_timeout_in_ms=to_ms(heartbeat_timeout),
        shutdown_barrier_timeout_in_ms=to_ms(shutdown_timeout),
    )
    ctx.coordination_service.cluster_register_with_barrier = bool(startup_timeout)


def multi_worker_strategy(cluster, *, options, **timeouts):
    """The process's one MWMS; `timeouts`: startup_, heartbeat_ and shutdown_timeout."""
    import tensorflow as tf

    from keras_dp import early, fault, keras_fix
    from keras_dp.keras_fix import failure_hook

    key = cluster.to_json()
    with _lock:
        if "strategy" in _multi_worker:
            if _multi_worker["key"] != key:
                raise StrategyError(
                    "a MultiWorkerMirroredStrategy for a different cluster already exists "
                    "in this process; TensorFlow allows one per process. Start a new "
                    "process for the new cluster.")
            return _multi_worker["strategy"]
        early_cluster = early.cluster() if early.is_set_up() else None
        if early_cluster is not None and early_cluster.to_json() != key:
            raise StrategyError(
                f"TensorFlow was set up at import for {early_cluster.describe()} "
                f"({early_cluster.source}); keras_dp cannot create a strategy for "
                f"{cluster.describe()} in this process. Pass no cluster/environ to "
                "keras_dp.scope(), or start a new process.")
        too_late = StrategyError(STARTUP_EXPLANATION.format(
            what="MultiWorkerMirroredStrategy's collective ops"))
        if early_cluster is not None:
            early.reconfigure(**timeouts)
        elif context_initialized():
            raise too_late
        else:
            configure_coordination(cluster, **timeouts)
        failure_hook.install(cluster)
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            cluster_spec(cluster),
            task_type=cluster.task_type, task_id=cluster.task_index,
            rpc_layer=cluster.rpc_layer or "grpc",
            num_accelerators={"GPU": len(tf.config.get_visible_devices("GPU"))})
        try:
            with fault.startup_guard(cluster, timeouts["startup_timeout"]), \
                    early.quiet_second_enable():
                strategy = tf.distribute.MultiWorkerMirroredStrategy(
                    cluster_resolver=resolver, communication_options=options)
        except RuntimeError as exc:
            if "program startup" in str(exc) or "initialized" in str(exc):
                raise too_late from None
            raise
        keras_fix.apply(keras_fix.MULTI_WORKER_PARTS + keras_fix.IMPORT_PARTS)
        _multi_worker.update(strategy=strategy, key=key)
        return strategy
