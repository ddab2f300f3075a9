"""`keras_dp.scope()`: resolve the cluster, create the strategy once, enter it."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Mapping, Optional

from keras_dp import loop
from keras_dp.cluster import ClusterInfo, resolve_cluster
from keras_dp.current import current_context, set_context
from keras_dp.data.batching import global_batch_size, per_replica_batch_size
from keras_dp.errors import StrategyError

log = logging.getLogger("keras_dp")

_lock = threading.Lock()
_NAMES = {"multi_worker_mirrored": "MultiWorkerMirroredStrategy", "mirrored": "MirroredStrategy",
          "one_device": "OneDeviceStrategy", "tpu": "TPUStrategy", "default": "default strategy"}


class Context:
    """A training script's data-parallel setup, returned by `keras_dp.scope()`.

    As a context manager it enters the strategy's scope.

    Attributes:
        strategy: The `tf.distribute.Strategy`.
        cluster: The resolved `ClusterInfo`.
        num_replicas: Replicas in sync across all workers.
        num_workers: Training processes.
        worker_index: This process's index among them (0 is the chief).
        is_chief: Whether this process writes checkpoints, logs and models.
        kind: The strategy's kind (`"multi_worker_mirrored"`, `"mirrored"`, ...).
        strategy_name: Its name, e.g. `"MirroredStrategy"`.
    """

    def __init__(self, strategy, cluster: ClusterInfo, options: Mapping[str, Any]):
        from keras_dp.strategy import strategy_kind

        self.strategy = strategy
        self.cluster = cluster
        self.options = dict(options)
        self.num_replicas = int(strategy.num_replicas_in_sync)
        self.num_workers = cluster.num_workers
        self.worker_index = cluster.worker_index or 0
        self.is_chief = cluster.is_chief
        self.kind = strategy_kind(strategy)
        self.strategy_name = _NAMES[self.kind]
        self._scopes = []

    def global_batch(self, per_replica_batch: int) -> int:
        """Examples per step over all replicas for a per-replica batch: `batch * num_replicas`."""
        return global_batch_size(per_replica_batch, self.strategy)

    def per_replica_batch(self, global_batch: int) -> int:
        """The per-replica batch for a global batch, which must divide evenly."""
        return per_replica_batch_size(global_batch, self.num_replicas)

    def run(self, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` on every replica (`strategy.run`), which all-reduces gradients."""
        return self.strategy.run(fn, args=args, kwargs=kwargs)

    def reduce(self, value, op: str = "sum"):
        """Reduces per-replica values over all replicas and workers (`"sum"` or `"mean"`)."""
        return loop.reduce(value, op, strategy=self.strategy)

    def distribute(self, data, **options):
        """A distributed dataset sharded per worker; see `keras_dp.distribute`."""
        return loop.distribute(data, strategy=self.strategy, **options)

    compute_loss = staticmethod(loop.compute_loss)

    def train_step(self, model, optimizer, loss, **options):
        """A compiled data-parallel training step; see `keras_dp.train_step`."""
        return loop.train_step(model, optimizer, loss, strategy=self.strategy, **options)

    def metric_results(self, metrics):
        """Metric results over all replicas and workers (every worker must call it)."""
        return loop.metric_results(metrics, strategy=self.strategy)

    def describe(self) -> str:
        return (f"{self.strategy_name}: {self.num_replicas} replica(s), "
                f"{self.num_workers} worker(s), this is worker {self.worker_index}"
                f"{' (chief)' if self.is_chief else ''}")

    def __enter__(self) -> "Context":
        scope = self.strategy.scope()
        scope.__enter__()
        self._scopes.append(scope)  # only a scope that was entered is exited
        return self

    def __exit__(self, *exc_info) -> None:
        self._scopes.pop().__exit__(*exc_info)

    def __repr__(self) -> str:
        return f"<keras_dp.Context {self.describe()}>"


def scope(kind: str = "auto", *, cpu_replicas: Optional[int] = None, tpu: Optional[str] = None,
          environ: Optional[Mapping[str, str]] = None, **strategy_options) -> Context:
    """Resolves the cluster, creates the strategy (once per process) and returns its context.

    Use it as `with keras_dp.scope() as ctx:`. Calling it again in the process
    returns a context for the same strategy; asking for a different one raises.

    Args:
        kind: Strategy kind, see `keras_dp.get_strategy()` (default `"auto"`).
        cpu_replicas: Split the CPU into this many replicas (single process).
        tpu: TPU address (`"local"` on a TPU VM, `""` on Colab).
        environ: Variables to resolve the cluster from (default `os.environ`).
        **strategy_options: Passed on to `keras_dp.get_strategy()`.

    Returns:
        A `Context`.

    Raises:
        StrategyError: a different strategy than this process's was asked for.
    """
    from keras_dp import early, strategy as strategy_lib
    from keras_dp.keras_fix import apply_check, warning_filter

    requested = {"kind": strategy_lib.normalize_kind(kind), "cpu_replicas": cpu_replicas,
                 "tpu": tpu, **strategy_options}
    with _lock:
        existing = current_context()
        if existing is not None:
            old = existing.options
            if old == requested or requested["kind"] == "auto" and all(
                    requested[k] in (None, old.get(k)) for k in requested if k != "kind"):
                return Context(existing.strategy, existing.cluster, old)
            raise StrategyError(
                f"keras_dp.scope() was already called in this process with "
                f"{_describe_options(old)}; now with "
                f"{_describe_options(requested)}. TensorFlow keeps one strategy per "
                "process: reuse the first scope's options, or start a new process.")
        env = os.environ if environ is None else environ
        cluster = early.cluster() if environ is None and early.is_set_up() else None
        if cluster is None:
            cluster = resolve_cluster(env, exchange=_exchange_for(env))
        warning_filter.install()
        if environ is None and cluster.source != "tf_config" and cluster.is_multi_worker:
            os.environ["TF_CONFIG"] = cluster.to_json()  # for TF and libraries that read it
        strategy = strategy_lib.get_strategy(
            requested["kind"], cluster=cluster, cpu_replicas=cpu_replicas, tpu=tpu,
            environ=env, **strategy_options)
        context = Context(strategy, cluster, requested)
        set_context(context)
        if context.num_replicas > 1:
            apply_check.install(env)
        log.info("keras_dp: %s; %s", cluster.describe(), context.describe())
        return Context(strategy, cluster, requested)


def _exchange_for(environ):
    """The MPI address exchange (`keras_dp.mpi`) when enabled, else None."""
    from keras_dp import mpi

    return mpi.exchange_addresses if mpi.enabled(environ) else None


def _describe_options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items() if v is not None)
