"""Cluster resolution: which processes train together, and which one this is (docs/cluster.md).

One `ClusterEnvironment` per source; the built-in classes are reachable here by name.
"""

from keras_dp.cluster.base import ClusterEnvironment, read_int
from keras_dp.cluster.hostlist import expand_hostlist, expand_tasks_per_node
from keras_dp.cluster.mpi import parse_hostfile
from keras_dp.cluster.registry import cluster_variables, environments, register_environment
from keras_dp.cluster.resolve import resolve_cluster
from keras_dp.cluster.spec import ClusterInfo


def __getattr__(name):
    for cls in environments():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
