"""MPI launchers: Open MPI, MPICH/Intel MPI (Hydra), PMIx; docs/cluster.md#running-under-mpirun."""

from __future__ import annotations

import os
from typing import List, Mapping, Optional, Tuple

from keras_dp.cluster.base import MAX_TASKS, ClusterEnvironment, ports_fit, read_int
from keras_dp.cluster.registry import register_environment
from keras_dp.errors import ClusterConfigError

HOSTFILE = "KERAS_DP_HOSTFILE"
#: Read by the address exchange (keras_dp.mpi): this rank's host, and its off switch.
HOST_VARIABLE = "KERAS_DP_HOST"
SWITCH_VARIABLE = "KERAS_DP_MPI_EXCHANGE"

# (title, rank, size, local rank, local size variables) of each flavour.
_FLAVOURS: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MPICH/PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("PMIx", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
)


def parse_hostfile(text: str) -> List[Tuple[str, int]]:
    """`(host, slots)` pairs of an Open MPI (`n1 slots=4`), MPICH (`n1:4`) or bare hostfile."""
    hosts: List[Tuple[str, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        host, slots = fields[0], 1
        if ":" in host and not host.startswith("["):
            host, _, count = host.partition(":")
            if not count.isdecimal() or int(count) < 1:
                raise ClusterConfigError(
                    f"line {number} ({line!r}) has a bad slot count", variable=HOSTFILE,
                    received=text, fix="write host:N (MPICH) or host slots=N (Open MPI)")
            slots = int(count)
        for option in fields[1:]:
            key, _, value = option.partition("=")
            if key in ("slots", "max_slots", "max-slots"):
                if not value.isdecimal() or int(value) < 1:
                    raise ClusterConfigError(
                        f"line {number} ({line!r}) has a bad {key} value", variable=HOSTFILE,
                        received=text, fix="write host slots=N with N >= 1")
                if key == "slots":
                    slots = int(value)
        hosts.append((host, slots))
    if not hosts:
        raise ClusterConfigError("the hostfile lists no hosts", variable=HOSTFILE,
                                 received=text, fix="list one host per line")
    return hosts


class MPIEnvironment(ClusterEnvironment):
    """Processes started by mpirun/mpiexec (Open MPI, MPICH, Intel MPI, PMIx)."""

    name = "mpi"
    title = "MPI"
    variables = tuple(name for flavour in _FLAVOURS for name in flavour[1:]) + (
        HOSTFILE, HOST_VARIABLE, SWITCH_VARIABLE)
    aliases = ("ompi", "openmpi")
    address_variable = HOSTFILE
    no_addresses = (HOSTFILE, "set KERAS_DP_HOSTFILE to the hostfile given to mpirun, or "
                    "KERAS_DP_WORKERS to every rank's host:port, or install mpi4py (pip install "
                    "keras-dp[mpi]) so keras_dp exchanges addresses through MPI")

    def __init__(self, environ: Mapping[str, str]):
        super().__init__(environ)
        self.flavour = next(f for f in _FLAVOURS if f[1] in environ)

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        return any(f[1] in environ and (f[2] in environ or f[0] == "PMIx") for f in _FLAVOURS)

    def rank_variable(self) -> str:
        return self.flavour[1]

    def world_size(self) -> int:
        name = self.flavour[2]
        if name not in self.environ and self.flavour[0] == "PMIx":
            raise ClusterConfigError(
                "is not set, so the number of ranks is unknown", variable=name,
                fix="launch with mpirun (it sets PMIX_SIZE) or set KERAS_DP_WORKERS")
        return read_int(self.environ, name, minimum=1, maximum=MAX_TASKS)

    def rank(self) -> int:
        rank, size = read_int(self.environ, self.flavour[1], minimum=0), self.world_size()
        return self.checked_rank(rank, f"rank {rank} is out of range for {self.flavour[2]}={size}",
                                 "launch with mpirun so rank and size come from one launch")

    def local_rank(self) -> int:
        name = self.flavour[3]
        if name in self.environ:
            return read_int(self.environ, name, minimum=0)
        table = self._slot_table()
        return 0 if table is None else table[self.rank()][1]

    def local_size(self) -> int:
        name = self.flavour[4]
        if name in self.environ:
            return read_int(self.environ, name, minimum=1)
        table = self._slot_table()
        return 1 if table is None else [h for h, _ in table].count(table[self.rank()][0])

    def all_local(self) -> bool:
        """Whether every rank runs on this node."""
        return self.flavour[4] in self.environ and self.local_size() == self.world_size()

    def _slot_table(self) -> Optional[List[Tuple[str, int]]]:
        """For every rank, `(host, local index)` from the hostfile (by-slot mapping), if named."""
        path = self.environ.get(HOSTFILE)
        if not path:
            return None
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                text = handle.read(1 << 20)
        except UnicodeDecodeError:
            raise ClusterConfigError(
                "is not a text hostfile (it is not UTF-8)", variable=HOSTFILE, received=path,
                fix="point KERAS_DP_HOSTFILE at the hostfile given to mpirun") from None
        except (OSError, ValueError) as exc:   # ValueError: a NUL byte in the path
            raise ClusterConfigError(
                f"cannot read the hostfile ({getattr(exc, 'strerror', None) or exc})",
                variable=HOSTFILE, received=path,
                fix="point KERAS_DP_HOSTFILE at a readable file") from None
        table = [(host, local) for host, slots in parse_hostfile(text) for local in range(slots)]
        size = self.world_size()
        if len(table) < size:
            raise ClusterConfigError(
                f"the hostfile has {len(table)} slots but {self.flavour[2]}={size} "
                "ranks were started", variable=HOSTFILE, received=path,
                fix="give the hostfile enough slots, or pass the same hostfile to mpirun")
        return table[:size]

    def addresses(self, port_base: int) -> Optional[List[str]]:
        size, table = self.world_size(), self._slot_table()
        if table is not None:
            host, local = table[self.rank()]
            if self.flavour[3] in self.environ and self.local_rank() != local:
                raise ClusterConfigError(
                    f"the hostfile places rank {self.rank()} as local rank {local} on "
                    f"{host}, but the launcher says local rank {self.local_rank()}",
                    variable=HOSTFILE, received=self.environ[HOSTFILE],
                    fix="pass the same hostfile to mpirun with the default --map-by slot, "
                        "or list the addresses in KERAS_DP_WORKERS")
            ports_fit(port_base, max(local for _, local in table) + 1)
            return [f"{h}:{port_base + i}" for h, i in table]
        if self.all_local():
            ports_fit(port_base, size)
            return [f"127.0.0.1:{port_base + r}" for r in range(size)]
        return [f"127.0.0.1:{port_base}"] if size == 1 else None

    def prefers_exchange(self) -> bool:
        """An MPI exchange (free ports) beats derived addresses, unless a hostfile is named."""
        return not self.environ.get(HOSTFILE)

    def used_variables(self) -> List[str]:
        return [name for name in self.flavour[1:] + (HOSTFILE,) if name in self.environ]


register_environment(MPIEnvironment, priority=300)
