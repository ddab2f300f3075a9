"""Cluster resolution: which processes train together, and which one this is.

Every source (TF_CONFIG, `KERAS_DP_WORKERS`, MPI, SLURM, Kubernetes, and
any a user adds with `register_environment`) is one `ClusterEnvironment`
subclass in its own module, reading a plain `environ` mapping;
`resolve_cluster()` tries them in precedence order (`environments()`), and
`cluster_variables()` lists every variable they read. The built-in classes
are also reachable here by name (e.g. `keras_dp.cluster.SlurmEnvironment`).
"""

from keras_dp.cluster.base import ClusterEnvironment, read_int
from keras_dp.cluster.hostlist import expand_hostlist, expand_tasks_per_node
from keras_dp.cluster.mpi import parse_hostfile
from keras_dp.cluster.registry import cluster_variables, environments, register_environment
from keras_dp.cluster.resolve import resolve_cluster
from keras_dp.cluster.spec import ClusterInfo, parse_address

__all__ = [
    "ClusterEnvironment", "ClusterInfo", "cluster_variables", "environments",
    "expand_hostlist", "expand_tasks_per_node", "parse_address", "parse_hostfile",
    "read_int", "register_environment", "resolve_cluster",
]


def __getattr__(name):
    for cls in environments():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
