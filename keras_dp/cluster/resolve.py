"""`resolve_cluster()`: from the process environment to a validated `ClusterInfo`."""

from __future__ import annotations

import os
from typing import Callable, Mapping, Optional

from keras_dp.cluster.base import SOURCE_VARIABLE, ClusterEnvironment, read_port_base
from keras_dp.cluster.explicit import TASK_INDEX, WORKERS, ExplicitEnvironment
from keras_dp.cluster.registry import RESERVED_NAMES, environments
from keras_dp.cluster.spec import ClusterInfo
from keras_dp.cluster.tf_config import TFConfigEnvironment
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError


def _forced_source(environ: Mapping[str, str], source: Optional[str]) -> Optional[str]:
    variable, raw = ("source", source) if source else (SOURCE_VARIABLE,
                                                       environ.get(SOURCE_VARIABLE))
    value = str(raw or "").strip().lower().replace("-", "_")
    if value in ("", "auto"):
        return None
    if value in RESERVED_NAMES:  # single, none, local
        return "single"
    for cls in environments():
        if value == cls.name or value in cls.aliases:
            return cls.name
    names = [cls.name for cls in environments()] + ["single"]
    raise ClusterConfigError(f"unknown cluster source {value!r}", variable=variable,
                             received=raw, fix=f"use one of: auto, {', '.join(names)}")


def _check_tf_config_against_explicit(info: ClusterInfo, environ: Mapping[str, str]) -> None:
    explicit = ExplicitEnvironment(environ)
    addresses = explicit.addresses()
    if [a.lower() for a in addresses] != [a.lower() for a in info.worker_addresses]:
        raise ConflictingSourcesError(
            f"TF_CONFIG lists workers {info.worker_addresses} but {WORKERS} lists {addresses}; "
            "keras_dp cannot tell which is meant", variable=WORKERS, received=environ.get(WORKERS),
            fix=f"unset one of TF_CONFIG and {WORKERS} (TF_CONFIG wins when both describe the "
                "same cluster)")
    index = explicit.task_index()
    if index is not None and index != info.worker_index:
        raise ConflictingSourcesError(
            f"says this is worker {index} but TF_CONFIG's task is {info.task_type} "
            f"{info.task_index} (worker {info.worker_index})", variable=TASK_INDEX,
            received=environ.get(TASK_INDEX),
            fix=f"unset {TASK_INDEX}, or make it agree with TF_CONFIG")


def _take_rank_from(explicit: ExplicitEnvironment, launcher: Optional[ClusterEnvironment]) -> None:
    """Checks KERAS_DP_WORKERS and KERAS_DP_TASK_INDEX against a launcher's count and rank."""
    index, count = explicit.task_index(), explicit.world_size()
    size = launcher.world_size() if launcher else 1
    if size == 1:
        return
    if size != count:
        raise ConflictingSourcesError(
            f"lists {count} workers but {launcher.title} started {size} "
            f"processes ({launcher.rank_variable()} and its size variable)",
            variable=WORKERS, received=explicit.environ.get(WORKERS),
            fix=f"list exactly one address per {launcher.title} process, or unset "
                f"{WORKERS} to derive the addresses from {launcher.title}")
    rank = launcher.rank()
    if index is not None and index != rank:
        raise ConflictingSourcesError(
            f"says this process is worker {index} but {launcher.rank_variable()}={rank}",
            variable=TASK_INDEX, received=explicit.environ.get(TASK_INDEX),
            fix=f"unset {TASK_INDEX} to take the index from {launcher.title}, or make them agree")
    explicit.rank_source = launcher


def resolve_cluster(environ: Optional[Mapping[str, str]] = None, *, source: Optional[str] = None,
                    port_base: Optional[int] = None,
                    exchange: Optional[Callable] = None) -> ClusterInfo:
    """Turns the environment into a validated cluster description (see docs/cluster.md).

    Args:
        environ: The variables to read (and a hostfile they may name); default `os.environ`.
        source: Force one source (an environment's name or `"single"`); overrides
            `KERAS_DP_CLUSTER`.
        port_base: First port for derived addresses; overrides `KERAS_DP_PORT_BASE` (8888).
        exchange: `exchange(launcher)` gives every task's `host:port` when the launcher does not
            know other tasks' hosts or `prefers_exchange()` (MPI without a hostfile).

    Returns:
        A `ClusterInfo`.

    Raises:
        ClusterConfigError: (a `ValueError`) naming the variable, the field and the fix.
    """
    environ = os.environ if environ is None else environ
    forced = _forced_source(environ, source)
    base = port_base if port_base is not None else read_port_base(environ)
    if forced == "single":
        return ClusterInfo(source="single", cluster={},
                           notes=(f"{SOURCE_VARIABLE}=single: other cluster variables ignored",))

    for cls in environments():
        if forced == cls.name and not cls.detect(environ):
            problem, fix = cls.absent or (
                f"asks for the {cls.title} source but its variables are not set "
                f"(looked for {', '.join(cls.variables[:4])})",
                f"run under {cls.title}, or unset {SOURCE_VARIABLE} to detect the source")
            raise ClusterConfigError(problem, variable=SOURCE_VARIABLE, fix=fix,
                                     received=environ.get(SOURCE_VARIABLE, forced))
    launchers = [cls for cls in environments()
                 if cls not in (TFConfigEnvironment, ExplicitEnvironment)]
    has_tf_config = TFConfigEnvironment.detect(environ)
    has_explicit = ExplicitEnvironment.detect(environ)
    if TASK_INDEX in environ and not has_explicit and not has_tf_config:
        raise ClusterConfigError(
            f"is set but {WORKERS} is not, so there is no worker list to index",
            variable=TASK_INDEX, received=environ[TASK_INDEX],
            fix=f"also set {WORKERS}=host:port,host:port (or unset {TASK_INDEX})")

    # TF_CONFIG first, checked against KERAS_DP_WORKERS
    if has_tf_config and forced in (None, TFConfigEnvironment.name):
        tf_config = TFConfigEnvironment(environ)
        if has_explicit:
            _check_tf_config_against_explicit(tf_config.info, environ)
        notes = [f"{cls.title} variables are present too; TF_CONFIG takes precedence"
                 for cls in launchers if cls.detect(environ)]
        return tf_config.cluster_info(base, notes=notes)

    # The launcher: the one asked for, else the first detected.
    launcher = next((cls(environ) for cls in launchers
                     if forced in (None, cls.name) and cls.detect(environ)), None)
    notes = [] if launcher else [n for cls in launchers for n in cls.undetected_notes(environ)]

    # Then explicit addresses, the index checked against (or taken from) the launcher
    if has_explicit:
        explicit = ExplicitEnvironment(environ)
        _take_rank_from(explicit, launcher)
        return explicit.cluster_info(base, notes=notes)

    if launcher is not None:
        return launcher.cluster_info(base, exchange, notes=notes)
    return ClusterInfo(source="single", cluster={}, notes=tuple(notes))
