"""Part `early_collectives`: multi-worker collectives configured when TensorFlow is imported.

Upstream: tensorflow/tensorflow's TODO(b/129298253) in `Context.enable_collective_ops`.
See docs/keras_layer.md. Also the hook around `import tensorflow` (`keras_dp.launcher.quiet`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional

from keras_dp.cluster import resolve_cluster
from keras_dp.errors import ConfigError, StrategyError
from keras_dp.multi_worker import cluster_spec, configure_coordination, context_initialized

log = logging.getLogger("keras_dp")

PART = "early_collectives"
#: Seconds the runtime's start (the program's first op) waits for every peer.
STARTUP_TIMEOUT_VARIABLE = "KERAS_DP_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 120.0

_lock = threading.RLock()
_state: Dict[str, Any] = {}  # cluster, exchanged, startup_timeout; tried; off (our CLI)


def disable() -> None:
    """Turns the early set-up off for this process (keras_dp's own commands)."""
    _state["off"] = True  # the import hook's set_up() then does nothing


def cluster():
    """The cluster the early set-up configured TensorFlow for, or None.

    Raises:
        StrategyError: the environment changed since (e.g. `TF_CONFIG` set after the import).
    """
    configured = _state.get("cluster")  # set with "exchanged", in one update
    if configured is None or _state.get("exchanged"):
        return configured
    now = resolve_cluster(os.environ)
    if now.to_json() != configured.to_json():
        raise StrategyError(
            "the cluster changed after TensorFlow was imported: keras_dp set up "
            f"TensorFlow's collective ops for {configured.describe()} (from "
            f"{configured.source}), and the environment now says {now.describe()}. "
            "Set TF_CONFIG (or the launcher's variables) before importing TensorFlow, "
            "or switch the early set-up off with KERAS_DP_KERAS_FIX (a list of parts "
            "without early_collectives) and create the strategy before any TensorFlow op.")
    return configured


def is_set_up() -> bool:
    """Whether this process's TensorFlow was configured early for a cluster."""
    return "cluster" in _state


def set_up() -> bool:
    """Configures TF for this worker's cluster if still possible (True if so); never raises."""
    with _lock:
        if "cluster" in _state:
            return True
        if _state.get("off") or _state.get("tried"):
            return False
        _state["tried"] = True
        try:
            return _set_up()
        except Exception as exc:  # noqa: BLE001 - keras_dp.scope() reports it
            log.debug("keras_dp: no early set-up of collectives (%s: %s)",
                      type(exc).__name__, exc)
            return False


def _set_up() -> bool:
    from keras_dp import keras_fix
    from keras_dp import strategy as strategy_lib
    from keras_dp.context import _exchange_for
    from keras_dp.keras_fix import _part, early_collectives, failure_hook

    environ = os.environ
    if (PART not in keras_fix.enabled_parts() or not _part.in_range(early_collectives.PART)
            or context_initialized()):
        return False
    exchange = _exchange_for(environ)
    info = resolve_cluster(environ, exchange=exchange)
    # choose_kind() refuses parameter servers with its message.
    if not (info.is_multi_worker and info.is_training_task) or "ps" in info.cluster:
        return False
    timeout = startup_timeout(environ)
    strategy_lib.apply_gpu_split(info, environ)
    _configure(info, startup_timeout=timeout)
    failure_hook.install(info)
    _guard_first_start(info)
    _state.update(cluster=info, exchanged=exchange is not None, startup_timeout=timeout)
    log.info("keras_dp: TensorFlow set up early as %s", info.describe())
    return True


def startup_timeout(environ) -> Optional[float]:
    """`KERAS_DP_STARTUP_TIMEOUT` in seconds (0: no bound), default 120.

    Raises:
        ConfigError: for a value that is not a number of seconds.
    """
    raw = str(environ.get(STARTUP_TIMEOUT_VARIABLE, "")).strip()
    try:
        value = float(raw or DEFAULT_STARTUP_TIMEOUT)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigError("is not a number of seconds", variable=STARTUP_TIMEOUT_VARIABLE,
                          received=raw, fix="set it to e.g. 300, or 0 for no bound")
    return value or None


def _configure(info, *, startup_timeout: Optional[float]) -> None:
    """Does `CollectiveAllReduceExtended._initialize_multi_worker`'s set-up ahead (then a no-op)."""
    from tensorflow.core.protobuf import rewriter_config_pb2, tensorflow_server_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    spec = multi_worker_util.normalize_cluster_spec(cluster_spec(info))
    task_type, task_id = info.task_type, info.task_index
    device_filter = "/job:%s/task:%d" % (task_type, task_id)
    leader = multi_worker_util.collective_leader(spec, task_type, task_id)
    ctx = context.context()
    ctx.configure_collective_ops(collective_leader=leader,
                                 scoped_allocator_enabled_ops=("CollectiveReduce",),
                                 device_filters=(device_filter,))
    configure_coordination(info, startup_timeout=startup_timeout, heartbeat_timeout=None,
                           shutdown_timeout=None, replace=True)
    config = copy.deepcopy(ctx.config)
    rewrite = config.graph_options.rewrite_options
    rewrite.scoped_allocator_optimization = rewriter_config_pb2.RewriterConfig.ON
    del rewrite.scoped_allocator_opts.enable_op[:]
    rewrite.scoped_allocator_opts.enable_op.append("CollectiveReduce")
    config.experimental.collective_group_leader = leader
    del config.device_filters[:]
    config.device_filters.append(device_filter)
    ctx.enable_collective_ops(tensorflow_server_pb2.ServerDef(
        cluster=spec.as_cluster_def(), default_session_config=config, job_name=task_type,
        task_index=task_id, protocol=info.rpc_layer or "grpc", port=0))


def _guard_first_start(info) -> None:
    """Runs the first `Context.ensure_initialized` (where peers are awaited) in `startup_guard`."""
    from tensorflow.python.eager import context

    from keras_dp import fault

    cls = context.Context
    original = cls.__dict__["ensure_initialized"]

    def ensure_initialized(self):
        if self._initialized:
            return original(self)
        with _lock:
            if cls.__dict__.get("ensure_initialized") is ensure_initialized:
                cls.ensure_initialized = original
        with fault.startup_guard(info, _state.get("startup_timeout")):
            return original(self)

    cls.ensure_initialized = ensure_initialized


def reconfigure(**timeouts) -> None:
    """Applies `scope()`'s startup_, heartbeat_ and shutdown_timeout if TF has not started."""
    if is_set_up() and not context_initialized():
        _state["startup_timeout"] = timeouts["startup_timeout"]
        configure_coordination(_state["cluster"], replace=True, **timeouts)


class TensorFlowImportHook(importlib.abc.MetaPathFinder):
    """Runs this process's coming `import tensorflow` inside `around()` (a probe is no import)."""

    def __init__(self, around: Callable[[], ContextManager]):
        self.around = around
        sys.meta_path.insert(0, self)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self not in sys.meta_path:
            return None
        sys.meta_path.remove(self)
        try:  # the spec the other finders give
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_around(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                with self.around():
                    exec_module(module)

            spec.loader.exec_module = exec_around
        return spec


@contextlib.contextmanager
def _then_set_up() -> Iterator[None]:
    yield
    set_up()


def install() -> None:
    """Sets up now if TensorFlow is imported, else right after it is (`import keras_dp`)."""
    if "tensorflow" not in sys.modules:
        TensorFlowImportHook(_then_set_up)
    elif getattr(sys.modules["tensorflow"], "__spec__", None) is not None:
        set_up()


@contextlib.contextmanager
def quiet_second_enable() -> Iterator[None]:
    """Hides TensorFlow's "earlier tensors may break" as MWMS enables our collectives again."""
    def drop(record) -> bool:
        return "Enabling collective ops after program startup" not in record.getMessage()

    absl = logging.getLogger("absl")
    if is_set_up():
        absl.addFilter(drop)
    try:
        yield
    finally:
        absl.removeFilter(drop)
