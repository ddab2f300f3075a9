"""The cluster-environment interface: a user's own environment, node ranks, cluster_variables().

Each case is a plain dict `environ`; no test touches os.environ.
"""

import subprocess
import sys

import pytest

import keras_dp.cluster
from keras_dp.cluster import (ClusterEnvironment, cluster_variables, environments, read_int,
                              register_environment, registry, resolve_cluster)
from keras_dp.cluster.explicit import ExplicitEnvironment
from keras_dp.cluster.kubernetes import KubernetesEnvironment
from keras_dp.cluster.mpi import MPIEnvironment
from keras_dp.cluster.slurm import SlurmEnvironment
from keras_dp.cluster.tf_config import TFConfigEnvironment
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError
import test_cluster_explicit
import test_cluster_kubernetes
import test_cluster_mpi
import test_cluster_slurm
import test_cluster_source
import test_cluster_tf_config
from _cluster import SLURM_2x2, tf_config


class PBSEnvironment(ClusterEnvironment):
    """A user's launcher: one task per host, hosts listed in PBS_HOSTS."""

    name, title = "pbs", "PBS"
    variables = ("PBS_TASKNUM", "PBS_NP", "PBS_HOSTS")

    @classmethod
    def detect(cls, environ):
        return "PBS_TASKNUM" in environ

    def rank_variable(self):
        return "PBS_TASKNUM"

    def rank(self):
        return read_int(self.environ, "PBS_TASKNUM", minimum=0, maximum=self.world_size() - 1)

    def world_size(self):
        return read_int(self.environ, "PBS_NP", minimum=1)

    def addresses(self, port_base):
        if "PBS_HOSTS" not in self.environ:
            return None
        return [f"{host}:{port_base}" for host in self.environ["PBS_HOSTS"].split(",")]


PBS = {"PBS_TASKNUM": "1", "PBS_NP": "2", "PBS_HOSTS": "n1,n2"}
OMPI_2 = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
          "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}


@pytest.fixture
def pbs(monkeypatch):
    """PBSEnvironment registered for one test (the registry is restored after)."""
    environments()  # the built-ins first
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    register_environment(PBSEnvironment, priority=150)
    return PBSEnvironment


# (id, priority, environ, expected fields)
PBS_VALID = [
    ("detected", 150, PBS, dict(source="pbs", task_index=1, worker_addresses=["n1:8888", "n2:8888"],
                                variables=PBS)),
    ("port_base", 150, {**PBS, "KERAS_DP_PORT_BASE": "7000"},
     dict(worker_addresses=["n1:7000", "n2:7000"])),
    ("single_task", 150, {"PBS_TASKNUM": "0", "PBS_NP": "1"},
     dict(source="pbs", num_workers=1, notes=("PBS started a single process",))),
    ("mpi_beats_lower_priority", 150, {**PBS, **OMPI_2}, dict(source="mpi")),
    ("higher_priority_beats_mpi", 350, {**PBS, **OMPI_2}, dict(source="pbs")),
    ("forced_over_mpi", 150, {**PBS, **OMPI_2, "KERAS_DP_CLUSTER": "pbs"}, dict(source="pbs")),
    ("tf_config_beats_it", 350,
     {**PBS, "TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0})},
     dict(source="tf_config", notes=("PBS variables are present too; TF_CONFIG takes precedence",))),
    ("explicit_takes_its_rank", 150, {**PBS, "KERAS_DP_WORKERS": "a:1,b:1"},
     dict(source="explicit", task_index=1, notes=("task index from PBS (PBS_TASKNUM)",))),
]


@pytest.mark.parametrize("priority,environ,expected", [c[1:] for c in PBS_VALID],
                         ids=[c[0] for c in PBS_VALID])
def test_a_registered_environment_is_resolved(pbs, priority, environ, expected):
    register_environment(pbs, priority=priority)
    info = resolve_cluster(environ)
    for field, value in expected.items():
        assert getattr(info, field) == value, field


# (id, environ, variable named, words, error class)
PBS_INVALID = [
    ("forced_but_absent", {"KERAS_DP_CLUSTER": "pbs"}, "KERAS_DP_CLUSTER",
     "asks for the PBS source but its variables are not set (looked for PBS_TASKNUM, "
     "PBS_NP, PBS_HOSTS)", ClusterConfigError),
    ("rank_out_of_range", {**PBS, "PBS_TASKNUM": "2"}, "PBS_TASKNUM", "more than the 1",
     ClusterConfigError),
    ("no_hosts_known", {"PBS_TASKNUM": "0", "PBS_NP": "2"}, "KERAS_DP_WORKERS",
     "PBS started 2 processes on several nodes", ClusterConfigError),
    ("derived_address_checked", {**PBS, "PBS_HOSTS": "n1,bad host"}, "KERAS_DP_PORT_BASE",
     "invalid host name", ClusterConfigError),
    ("explicit_count_conflicts", {**PBS, "KERAS_DP_WORKERS": "a:1,b:1,c:1"},
     "KERAS_DP_WORKERS", "PBS started 2 processes", ConflictingSourcesError),
    ("explicit_index_conflicts", {**PBS, "KERAS_DP_WORKERS": "a:1,b:1",
                                  "KERAS_DP_TASK_INDEX": "0"},
     "KERAS_DP_TASK_INDEX", "PBS_TASKNUM=1", ConflictingSourcesError),
    ("unknown_source_lists_it", {"KERAS_DP_CLUSTER": "yarn"}, "KERAS_DP_CLUSTER",
     "slurm, pbs, kubernetes, single", ClusterConfigError),
]


@pytest.mark.parametrize("environ,variable,words,error", [c[1:] for c in PBS_INVALID],
                         ids=[c[0] for c in PBS_INVALID])
def test_a_registered_environment_names_variable_and_fix(pbs, environ, variable, words, error):
    with pytest.raises(error) as caught:
        resolve_cluster(environ)
    message = str(caught.value)
    assert message.startswith(variable) and words in message and "Fix:" in message, message


def test_registration_joins_sources_and_variables(pbs):
    assert environments()[-2:] == (pbs, KubernetesEnvironment)  # 200 > 150 > 100
    assert {"PBS_TASKNUM", "PBS_NP", "PBS_HOSTS"} <= set(cluster_variables())
    assert keras_dp.cluster.PBSEnvironment is pbs
    register_environment(pbs, priority=50)  # again: moved, not added twice
    assert environments()[-2:] == (KubernetesEnvironment, pbs)
    assert [cls.name for cls in environments()].count("pbs") == 1


@pytest.mark.parametrize("cls,priority,error,words", [
    (dict, 0, TypeError, "not a keras_dp.cluster.ClusterEnvironment"),
    (type("Nameless", (PBSEnvironment,), {"name": ""}), 0, ValueError, "lower-case name"),
    (type("Single", (PBSEnvironment,), {"name": "single"}), 0, ValueError, "other than auto"),
    (type("Upper", (PBSEnvironment,), {"name": "PBS"}), 0, ValueError, "lower-case name"),
    (type("Slurm2", (PBSEnvironment,), {"name": "slurm"}), 0, ValueError, "already registered"),
    (PBSEnvironment, 400, ValueError, "below 400"),
    (PBSEnvironment, 1.5, ValueError, "whole number"),
])
def test_registration_refuses_bad_environments(pbs, cls, priority, error, words):
    with pytest.raises(error, match=words):
        register_environment(cls, priority=priority)


def test_built_ins_in_precedence_order_and_by_name():
    assert environments()[:5] == (TFConfigEnvironment, ExplicitEnvironment, MPIEnvironment,
                                  SlurmEnvironment, KubernetesEnvironment)
    assert keras_dp.cluster.SlurmEnvironment is SlurmEnvironment
    with pytest.raises(AttributeError):
        keras_dp.cluster.NoSuchEnvironment  # noqa: B018


# (id, environment class, environ, (world size, rank, local rank, local size, node rank))
INTERFACE = [
    ("tf_config", TFConfigEnvironment,
     {"TF_CONFIG": tf_config({"chief": ["h1:1"], "worker": ["h1:2", "h2:1"]},
                             {"type": "worker", "index": 1})}, (3, 2, 0, 1, 1)),
    ("explicit", ExplicitEnvironment,
     {"KERAS_DP_WORKERS": "h1:1,h1:2,h2:1", "KERAS_DP_TASK_INDEX": "1"}, (3, 1, 1, 2, 0)),
    ("slurm", SlurmEnvironment, SLURM_2x2, (4, 3, 1, 2, 1)),
    ("slurm_cyclic", SlurmEnvironment,
     {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_DISTRIBUTION": "cyclic"}, (4, 1, 0, 2, 1)),
    ("mpi_one_node", MPIEnvironment, OMPI_2, (2, 0, 0, 2, 0)),
    ("kubernetes", KubernetesEnvironment,
     {"JOB_COMPLETION_INDEX": "2", "KERAS_DP_NUM_WORKERS": "3",
      "KERAS_DP_HOST_PATTERN": "t-{index}.s"}, (3, 2, 0, 1, 2)),
]


@pytest.mark.parametrize("cls,environ,expected", [c[1:] for c in INTERFACE],
                         ids=[c[0] for c in INTERFACE])
def test_every_environment_answers_the_interface(cls, environ, expected):
    assert cls.detect(environ)
    env = cls(environ)
    assert (env.world_size(), env.rank(), env.local_rank(), env.local_size(),
            env.node_rank()) == expected
    info = resolve_cluster(environ)
    assert info.source == cls.name and info.num_workers == expected[0]
    assert (info.local_rank, info.local_size) == expected[2:4]
    assert env.addresses(8888) == info.worker_addresses


def test_mpi_node_rank_from_the_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=2\nn2 slots=2\n")
    env = MPIEnvironment({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
                          "KERAS_DP_HOSTFILE": str(hostfile)})
    assert (env.node_rank(), env.local_rank(), env.local_size()) == (1, 0, 2)
    with pytest.raises(ClusterConfigError, match="KERAS_DP_HOSTFILE"):
        MPIEnvironment({**OMPI_2, "OMPI_COMM_WORLD_SIZE": "4"}).node_rank()


TABLES = (test_cluster_source, test_cluster_tf_config, test_cluster_explicit, test_cluster_slurm,
          test_cluster_mpi, test_cluster_kubernetes)
CASES = [(c[0], c[1]) for table in TABLES for c in table.VALID + table.INVALID]


@pytest.mark.parametrize("environ", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_without_the_cluster_variables_a_process_trains_alone(environ):
    """What a launcher removes from its workers' environment leaves no other cluster."""
    variables = set(cluster_variables())
    assert set(environ) <= variables, set(environ) - variables
    kept = {k: v for k, v in {**environ, "HOME": "/root"}.items() if k not in variables}
    assert resolve_cluster(kept).source == "single"


def test_workers_and_test_workers_inherit_no_cluster(monkeypatch):
    from _multiproc import base_env
    from keras_dp.launcher.supervisor import worker_environments

    outer = {**SLURM_2x2, **OMPI_2, "JOB_COMPLETION_INDEX": "0", "KERAS_DP_NUM_WORKERS": "2",
             "PMIX_RANK": "0", "MPI_LOCALRANKID": "0", "HOME": "/root"}
    for env in worker_environments(2, [5000, 5001], base=outer):
        assert resolve_cluster(env).worker_addresses == ["127.0.0.1:5000", "127.0.0.1:5001"]
        assert not set(env) & set(outer) - {"HOME"}, set(env) & set(outer)
    single, = worker_environments(1, [5000], base=outer)
    assert resolve_cluster(single).source == "single"
    for name, value in outer.items():
        monkeypatch.setenv(name, value)
    assert resolve_cluster(base_env()).source == "single"


def test_the_cluster_package_is_pure_python():
    code = ("import sys, keras_dp.cluster as c; c.resolve_cluster({}); c.cluster_variables(); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False"], out.stderr[-2000:]
