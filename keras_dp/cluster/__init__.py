"""Cluster resolution: which processes train together, and which one this is.

One small class per environment (`TFConfigEnvironment`, `ExplicitEnvironment`,
`MPIEnvironment`, `SlurmEnvironment`, `KubernetesEnvironment`), each reading a
plain `environ` mapping; `resolve_cluster()` applies them in precedence order.
"""

from keras_dp.cluster.explicit import ExplicitEnvironment
from keras_dp.cluster.hostlist import expand_hostlist, expand_tasks_per_node
from keras_dp.cluster.kubernetes import KubernetesEnvironment
from keras_dp.cluster.mpi import MPIEnvironment, parse_hostfile
from keras_dp.cluster.resolve import LAUNCHERS, SOURCES, describe_sources, resolve_cluster
from keras_dp.cluster.slurm import SlurmEnvironment
from keras_dp.cluster.spec import ClusterInfo, parse_address
from keras_dp.cluster.tf_config import TFConfigEnvironment

__all__ = [
    "ClusterInfo", "ExplicitEnvironment", "KubernetesEnvironment", "LAUNCHERS",
    "MPIEnvironment", "SOURCES", "SlurmEnvironment", "TFConfigEnvironment",
    "describe_sources", "expand_hostlist", "expand_tasks_per_node", "parse_address",
    "parse_hostfile", "resolve_cluster",
]
