"""`resolve_cluster()`: from the process environment to a validated `ClusterInfo`.

Sources, highest precedence first:

1. `TF_CONFIG`, as Kubeflow TFJob, Ray Train, Vertex AI or a user set it. It is
   used unchanged (after validation).
2. `KERAS_DP_WORKERS` (+ `KERAS_DP_TASK_INDEX`, or the rank of a launcher
   below).
3. MPI launchers (`OMPI_COMM_WORLD_*`, `PMI_*`, `PMIX_*`). An `mpirun`
   inside a SLURM allocation is the innermost launcher, so it wins over SLURM.
4. SLURM job steps (`SLURM_PROCID`, ...).
5. Kubernetes Indexed Jobs and JobSets (`JOB_COMPLETION_INDEX`).
6. Nothing: one worker.

`KERAS_DP_CLUSTER=<source>` picks a source explicitly. Two explicit sources
that disagree (TF_CONFIG against KERAS_DP_WORKERS, KERAS_DP_TASK_INDEX against
a launcher's rank) raise `ConflictingSourcesError`.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Type

from keras_dp.cluster.base import LauncherEnvironment, read_port_base
from keras_dp.cluster.explicit import TASK_INDEX, WORKERS, ExplicitEnvironment
from keras_dp.cluster.kubernetes import KubernetesEnvironment
from keras_dp.cluster.mpi import MPIEnvironment
from keras_dp.cluster.slurm import SlurmEnvironment
from keras_dp.cluster.spec import ClusterInfo, parse_address
from keras_dp.cluster.tf_config import TFConfigEnvironment
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError

SOURCE_VARIABLE = "KERAS_DP_CLUSTER"

#: Launchers in precedence order.
LAUNCHERS: Sequence[Type[LauncherEnvironment]] = (
    MPIEnvironment, SlurmEnvironment, KubernetesEnvironment)

#: Every accepted value of KERAS_DP_CLUSTER, in precedence order.
SOURCES = ("tf_config", "explicit", "mpi", "slurm", "kubernetes", "single")

#: The variable that names the hosts each launcher's addresses are derived from.
_ADDRESS_VARIABLES = {"kubernetes": "KERAS_DP_HOST_PATTERN", "slurm": "SLURM_STEP_NODELIST",
                      "mpi": "KERAS_DP_HOSTFILE"}

#: Called as exchange(launcher) when a launcher does not tell the other
#: tasks' hosts; returns every task's address (e.g. an MPI allgather).
AddressExchange = Callable[[LauncherEnvironment], List[str]]


def _host(address: str) -> str:
    return address.rpartition(":")[0].lower()


def _local_placement(addresses: Sequence[str], index: int):
    """Local rank and size from the tasks that share this task's host."""
    host = _host(addresses[index])
    same = [i for i, a in enumerate(addresses) if _host(a) == host]
    return same.index(index), len(same)


def _forced_source(environ: Mapping[str, str], source: Optional[str]) -> Optional[str]:
    variable = "source" if source else SOURCE_VARIABLE
    value = source if source else environ.get(SOURCE_VARIABLE)
    if value is None or not str(value).strip() or str(value).strip().lower() == "auto":
        return None
    value = str(value).strip().lower().replace("-", "_")
    aliases = {"tfconfig": "tf_config", "k8s": "kubernetes", "kubeflow": "tf_config",
               "ompi": "mpi", "openmpi": "mpi", "none": "single", "local": "single"}
    value = aliases.get(value, value)
    if value not in SOURCES:
        raise ClusterConfigError(
            f"unknown cluster source {value!r}", variable=variable,
            received=source if source else environ.get(SOURCE_VARIABLE),
            fix=f"use one of: auto, {', '.join(SOURCES)}")
    return value


def _detected_launcher(environ, forced) -> Optional[LauncherEnvironment]:
    if forced in ("mpi", "slurm", "kubernetes"):
        cls = {c.name: c for c in LAUNCHERS}[forced]
        if not cls.detect(environ):
            raise ClusterConfigError(
                f"asks for the {cls.title} source but its variables are not set "
                f"(looked for {', '.join(cls.detect_variables[:4])})",
                variable=SOURCE_VARIABLE, received=environ.get(SOURCE_VARIABLE, forced),
                fix=f"run under {cls.title}, or unset {SOURCE_VARIABLE} to detect the source")
        return cls(environ)
    for cls in LAUNCHERS:
        if cls.detect(environ):
            return cls(environ)
    return None


def _explicit_index(explicit: ExplicitEnvironment, launcher, addresses) -> tuple:
    """This task's index in KERAS_DP_WORKERS, checked against a launcher."""
    index = explicit.task_index()
    if launcher is not None:
        size = launcher.world_size()
        if size != len(addresses) and size > 1:
            raise ConflictingSourcesError(
                f"lists {len(addresses)} workers but {launcher.title} started {size} "
                f"processes ({launcher.rank_variable()} and its size variable)",
                variable=WORKERS, received=explicit.environ.get(WORKERS),
                fix=f"list exactly one address per {launcher.title} process, or unset "
                    f"{WORKERS} to derive the addresses from {launcher.title}")
        if size > 1:
            rank = launcher.rank()
            if index is not None and index != rank:
                raise ConflictingSourcesError(
                    f"says this process is worker {index} but {launcher.rank_variable()}="
                    f"{rank}", variable=TASK_INDEX,
                    received=explicit.environ.get(TASK_INDEX),
                    fix=f"unset {TASK_INDEX} to take the index from {launcher.title}, or "
                        "make them agree")
            return rank, launcher
    if index is None:
        raise ClusterConfigError(
            f"is not set, and no launcher (SLURM, MPI, Kubernetes) tells this process's "
            f"index among the {len(addresses)} workers of {WORKERS}", variable=TASK_INDEX,
            fix=f"set {TASK_INDEX} to this process's position in {WORKERS}, counting "
                "from 0 (worker 0 is the chief)")
    return index, None


def resolve_cluster(environ: Optional[Mapping[str, str]] = None, *,
                    source: Optional[str] = None,
                    port_base: Optional[int] = None,
                    exchange: Optional[AddressExchange] = None) -> ClusterInfo:
    """Turns the environment into a validated cluster description.

    Reads only `environ` (and a hostfile it may name), so it can be called
    with a plain dict in tests. See the module docstring for the sources and
    their precedence.

    Args:
        environ: The variables to read; defaults to `os.environ`.
        source: Force one source (`"tf_config"`, `"explicit"`, `"mpi"`,
            `"slurm"`, `"kubernetes"`, `"single"`); overrides
            `KERAS_DP_CLUSTER`.
        port_base: First port for derived addresses; overrides
            `KERAS_DP_PORT_BASE` (default 8888).
        exchange: Called with the launcher to get every task's `host:port`:
            when the launcher does not tell other tasks' hosts (multi-node
            MPI without a hostfile), and whenever the launcher prefers it
            (`prefers_exchange()`: MPI without a hostfile, where each task
            then offers a free port instead of `KERAS_DP_PORT_BASE + rank`).

    Returns:
        A `ClusterInfo`.

    Raises:
        ClusterConfigError: (a `ValueError`) naming the variable, the field and
            the fix, when the environment is malformed or inconsistent.

    Example:

    ```python
    info = keras_dp.resolve_cluster({
        "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_LOCALID": "1"})
    info.worker_addresses  # ['gpu01:8888', 'gpu01:8889', 'gpu02:8888', 'gpu02:8889']
    info.task_index        # 3
    ```
    """
    environ = os.environ if environ is None else environ
    forced = _forced_source(environ, source)
    base = port_base if port_base is not None else read_port_base(environ)
    notes: List[str] = []

    if forced == "single":
        return ClusterInfo(source="single", cluster={},
                           notes=(f"{SOURCE_VARIABLE}=single: other cluster variables ignored",))

    has_tf_config = TFConfigEnvironment.detect(environ)
    has_explicit = ExplicitEnvironment.detect(environ)
    if forced == "tf_config" and not has_tf_config:
        raise ClusterConfigError(
            "asks for TF_CONFIG but TF_CONFIG is not set", variable=SOURCE_VARIABLE,
            received=environ.get(SOURCE_VARIABLE, forced),
            fix="export TF_CONFIG, or unset KERAS_DP_CLUSTER")
    if forced == "explicit" and not has_explicit:
        raise ClusterConfigError(
            f"asks for explicit addresses but {WORKERS} is not set",
            variable=SOURCE_VARIABLE, received=environ.get(SOURCE_VARIABLE, forced),
            fix=f"set {WORKERS}=host:port,host:port, or unset {SOURCE_VARIABLE}")
    if TASK_INDEX in environ and not has_explicit and not has_tf_config:
        raise ClusterConfigError(
            f"is set but {WORKERS} is not, so there is no worker list to index",
            variable=TASK_INDEX, received=environ[TASK_INDEX],
            fix=f"also set {WORKERS}=host:port,host:port (or unset {TASK_INDEX})")

    # 1. TF_CONFIG
    if has_tf_config and forced in (None, "tf_config"):
        info = TFConfigEnvironment(environ).resolve()
        if has_explicit:
            addresses = ExplicitEnvironment(environ).addresses()
            if [a.lower() for a in addresses] != [a.lower() for a in info.worker_addresses]:
                raise ConflictingSourcesError(
                    f"TF_CONFIG lists workers {info.worker_addresses} but {WORKERS} lists "
                    f"{addresses}; keras_dp cannot tell which is meant",
                    variable=WORKERS, received=environ.get(WORKERS),
                    fix=f"unset one of TF_CONFIG and {WORKERS} (TF_CONFIG wins when both "
                        "describe the same cluster)")
            index = ExplicitEnvironment(environ).task_index()
            if index is not None and index != info.worker_index:
                raise ConflictingSourcesError(
                    f"says this is worker {index} but TF_CONFIG's task is "
                    f"{info.task_type} {info.task_index} (worker {info.worker_index})",
                    variable=TASK_INDEX, received=environ.get(TASK_INDEX),
                    fix=f"unset {TASK_INDEX}, or make it agree with TF_CONFIG")
        for cls in LAUNCHERS:
            if cls.detect(environ):
                notes.append(f"{cls.title} variables are present too; TF_CONFIG takes precedence")
        if info.is_multi_worker and info.is_training_task:
            local_rank, local_size = _local_placement(info.worker_addresses, info.worker_index)
            info = _replace(info, local_rank=local_rank, local_size=local_size)
        return _replace(info, notes=info.notes + tuple(notes))

    launcher = None if forced in ("explicit", "tf_config") else _detected_launcher(environ, forced)
    if launcher is None and SlurmEnvironment.in_allocation_only(environ) and "SLURM_PROCID" in environ:
        notes.append("inside a SLURM allocation but not in an srun step: this process "
                     "trains alone; start it with srun to use every task")

    # 2. explicit addresses
    if has_explicit and forced in (None, "explicit", "mpi", "slurm", "kubernetes"):
        explicit = ExplicitEnvironment(environ)
        addresses = explicit.addresses()
        index, rank_source = _explicit_index(explicit, launcher, addresses)
        variables = {k: environ[k] for k in (WORKERS, TASK_INDEX) if k in environ}
        if rank_source is not None:
            variables.update({k: environ[k] for k in rank_source.used_variables()})
            notes.append(f"task index from {rank_source.title} ({rank_source.rank_variable()})")
            local_rank, local_size = rank_source.local_rank(), rank_source.local_size()
        else:
            local_rank, local_size = _local_placement(addresses, index)
        if len(addresses) == 1:
            return ClusterInfo(source="explicit", cluster={}, notes=tuple(notes),
                               variables=variables)
        return ClusterInfo(source="explicit", cluster={"worker": tuple(addresses)},
                           task_type="worker", task_index=index, local_rank=local_rank,
                           local_size=local_size, notes=tuple(notes), variables=variables)

    # 3-5. launchers
    if launcher is not None:
        size, rank = launcher.world_size(), launcher.rank()
        variables = {k: environ[k] for k in launcher.used_variables()}
        notes.extend(launcher.notes())
        if size == 1:
            notes.append(f"{launcher.title} started a single process")
            return ClusterInfo(source=launcher.name, cluster={}, notes=tuple(notes),
                               variables=variables)
        addresses = None
        if exchange is not None and launcher.prefers_exchange():
            addresses = list(exchange(launcher))
            notes.append(f"addresses exchanged through {launcher.title} (a free port per task)")
        else:
            addresses = launcher.addresses(base)
        if addresses is None:
            if exchange is None:
                raise ClusterConfigError(
                    f"{launcher.title} started {size} processes on several nodes but does "
                    "not tell their host names", variable="KERAS_DP_HOSTFILE",
                    fix="set KERAS_DP_HOSTFILE to the hostfile given to mpirun, or "
                        "KERAS_DP_WORKERS to every rank's host:port, or install mpi4py "
                        "(pip install keras-dp[mpi]) so keras_dp exchanges addresses "
                        "through MPI")
            addresses = list(exchange(launcher))
            notes.append(f"addresses exchanged through {launcher.title}")
        # Derived from host names and patterns: each must be an address gRPC can use.
        source_variable = _ADDRESS_VARIABLES.get(launcher.name, "KERAS_DP_PORT_BASE")
        for i, address in enumerate(addresses):
            parse_address(address, variable=source_variable, field=f"derived address {i}",
                          received=environ.get(source_variable, address))
        if len(set(a.lower() for a in addresses)) != len(addresses):
            raise ClusterConfigError(
                f"the derived worker addresses repeat: {addresses}",
                variable="KERAS_DP_PORT_BASE", received=base,
                fix="list the addresses in KERAS_DP_WORKERS")
        return ClusterInfo(source=launcher.name, cluster={"worker": tuple(addresses)},
                           task_type="worker", task_index=rank,
                           local_rank=launcher.local_rank(), local_size=launcher.local_size(),
                           notes=tuple(notes), variables=variables)

    # 6. nothing
    return ClusterInfo(source="single", cluster={}, notes=tuple(notes))


def _replace(info: ClusterInfo, **changes) -> ClusterInfo:
    import dataclasses

    return dataclasses.replace(info, **changes)


def describe_sources() -> List[Dict[str, str]]:
    """The sources in precedence order with the variables each reads (for docs)."""
    rows = [{"source": "tf_config", "title": "TF_CONFIG", "variables": "TF_CONFIG"},
            {"source": "explicit", "title": "explicit",
             "variables": f"{WORKERS}, {TASK_INDEX}"}]
    for cls in LAUNCHERS:
        rows.append({"source": cls.name, "title": cls.title,
                     "variables": ", ".join(cls.detect_variables)})
    rows.append({"source": "single", "title": "nothing", "variables": "-"})
    return rows
