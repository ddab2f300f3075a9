"""MPI launches: hostfiles, the address exchange (keras_dp.mpi) with a stand-in communicator."""

import subprocess
import sys
from importlib import metadata

import pytest

from keras_dp import mpi
from keras_dp.cluster import parse_hostfile, resolve_cluster
from keras_dp.cluster.mpi import MPIEnvironment
from keras_dp.errors import ClusterConfigError

LOCAL_2 = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}


class FakeWorld:
    """Plays every rank of an allgather: `offers(round)` gives the other ranks' entries."""

    def __init__(self, rank, size, others):
        self.rank, self.size, self.others, self.rounds = rank, size, others, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, mine):
        round_others = self.others[min(len(self.rounds), len(self.others) - 1)]
        gathered = list(round_others)
        gathered.insert(self.rank, mine)
        self.rounds.append(gathered)
        return gathered


@pytest.mark.parametrize("others,drawn,expected", [
    # all ranks on this node: loopback, one round
    ([["127.0.0.1:40001"]], [40002], ["127.0.0.1:40001", "127.0.0.1:40002"]),
    # two ranks drew the same free port: the later one draws again
    ([["127.0.0.1:40001"], ["127.0.0.1:40001"]], [40001, 40007],
     ["127.0.0.1:40001", "127.0.0.1:40007"]),
])
def test_all_local_ranks_offer_distinct_loopback_ports(others, drawn, expected):
    world = FakeWorld(1, 2, others)
    ports = iter(drawn)
    addresses = mpi.exchange_addresses(MPIEnvironment(LOCAL_2), comm=world,
                                       pick_port=lambda launcher, attempt: next(ports))
    assert addresses == expected
    assert len(world.rounds) == len(drawn)


def test_the_default_port_is_free_and_not_the_fixed_base():
    world = FakeWorld(1, 2, [["127.0.0.1:1"]])
    host, port = mpi.exchange_addresses(MPIEnvironment(LOCAL_2), comm=world)[1].split(":")
    assert host == "127.0.0.1" and int(port) not in (8888, 8889)


def test_port_base_gives_fixed_ports():
    world = FakeWorld(1, 2, [["127.0.0.1:9500"]])
    addresses = mpi.exchange_addresses(
        MPIEnvironment({**LOCAL_2, "KERAS_DP_PORT_BASE": "9500"}), comm=world)
    assert addresses == ["127.0.0.1:9500", "127.0.0.1:9501"]


def test_several_nodes_advertise_the_host_name():
    environ = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
               "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "1",
               "KERAS_DP_HOST": "node-a.cluster", "KERAS_DP_PORT_BASE": "7000"}
    world = FakeWorld(0, 2, [["node-b.cluster:7000"]])
    assert mpi.exchange_addresses(MPIEnvironment(environ), comm=world) == [
        "node-a.cluster:7000", "node-b.cluster:7000"]


def test_mpi4py_built_for_another_mpi_is_explained():
    world = FakeWorld(0, 1, [[]])  # a singleton MPI_Init: mpi4py does not see mpirun
    with pytest.raises(ClusterConfigError, match="mpi4py was built for another MPI") as caught:
        mpi.exchange_addresses(MPIEnvironment(LOCAL_2), comm=world)
    assert str(caught.value).endswith("Received: OMPI_COMM_WORLD_RANK=1")


def test_resolve_prefers_the_exchange_under_mpi_unless_a_hostfile_is_named(tmp_path):
    calls = []

    def exchange(launcher):
        calls.append(launcher.rank())
        return ["127.0.0.1:40001", "127.0.0.1:40002"]

    info = resolve_cluster(LOCAL_2, exchange=exchange)
    assert calls == [1] and info.worker_addresses == ["127.0.0.1:40001", "127.0.0.1:40002"]
    assert any("exchanged through MPI" in note for note in info.notes)
    # Without an exchange (no mpi4py): loopback on fixed ports, as before.
    assert resolve_cluster(LOCAL_2).worker_addresses == ["127.0.0.1:8888", "127.0.0.1:8889"]
    # A hostfile needs no mpi4py and wins over the exchange.
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    info = resolve_cluster({**LOCAL_2, "KERAS_DP_HOSTFILE": str(hostfile)}, exchange=exchange)
    assert calls == [1] and info.worker_addresses == ["localhost:8888", "localhost:8889"]


def test_scope_uses_the_exchange_only_when_mpi4py_is_there(monkeypatch):
    from keras_dp import context

    monkeypatch.setattr(mpi, "available", lambda: True)
    assert context._exchange_for({}) is mpi.exchange_addresses
    assert context._exchange_for({"KERAS_DP_MPI_EXCHANGE": "0"}) is None
    monkeypatch.setattr(mpi, "available", lambda: False)
    assert context._exchange_for({}) is None


def test_importing_keras_dp_does_not_import_mpi4py_or_tensorflow():
    code = ("import sys, keras_dp, keras_dp.mpi; "
            "print('mpi4py' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


def test_mpi4py_comes_with_the_test_and_mpi_extras():
    """`pip install keras-dp[mpi]` (and `[test]`) installs mpi4py, per the installed metadata."""
    try:
        requires = metadata.requires("keras-dp") or []
    except metadata.PackageNotFoundError:
        pytest.skip("keras-dp is not installed (pip install -e .)")
    for extra in ("mpi", "test"):
        assert any(r.startswith("mpi4py") and f'extra == "{extra}"' in r
                   for r in requires), (extra, requires)


def test_mpi_hostfile_open_mpi_and_mpich_forms(tmp_path):
    for text in ("# two nodes\nn1 slots=2\nn2 slots=2 max_slots=4\n", "n1:2\nn2:2\n"):
        hostfile = tmp_path / "hosts"
        hostfile.write_text(text)
        info = resolve_cluster({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
                                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                                "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                                "KERAS_DP_HOSTFILE": str(hostfile)})
        assert info.worker_addresses == ["n1:8888", "n1:8889", "n2:8888", "n2:8889"]
        assert (info.task_index, info.local_rank, info.local_size) == (2, 0, 2)


def test_mpi_hostfile_too_small_and_wrong_mapping(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("n1 slots=1\n")
    base = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
            "KERAS_DP_HOSTFILE": str(hostfile)}
    with pytest.raises(ClusterConfigError, match="has 1 slots but OMPI_COMM_WORLD_SIZE=2"):
        resolve_cluster(base)
    hostfile.write_text("n1 slots=2\n")
    with pytest.raises(ClusterConfigError, match="launcher says local rank 0"):
        resolve_cluster({**base, "OMPI_COMM_WORLD_LOCAL_RANK": "0"})


def test_mpi_multi_node_uses_address_exchange():
    environ = {"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0",
               "MPI_LOCALNRANKS": "1"}
    seen = []

    def exchange(launcher):
        seen.append((launcher.rank(), launcher.world_size()))
        return ["nodeA:9000", "nodeB:9001"]

    info = resolve_cluster(environ, exchange=exchange)
    assert seen == [(1, 2)]
    assert info.worker_addresses == ["nodeA:9000", "nodeB:9001"]
    assert info.task_index == 1 and info.source == "mpi"


def test_parse_hostfile_rejects_bad_slots():
    with pytest.raises(ClusterConfigError, match="bad slots value"):
        parse_hostfile("n1 slots=zero\n")
    # str.isdigit() is true for a superscript two, which int() refuses.
    with pytest.raises(ClusterConfigError, match="bad slot count"):
        parse_hostfile("n1:\u00b2\n")
    with pytest.raises(ClusterConfigError, match="bad slots value"):
        parse_hostfile("n1 slots=\u00b2\n")
    with pytest.raises(ClusterConfigError, match="lists no hosts"):
        parse_hostfile("# nothing\n")
