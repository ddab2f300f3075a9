"""`ClusterEnvironment`, the interface every cluster source implements, and its helpers."""

from __future__ import annotations

import re
from typing import ClassVar, List, Mapping, Optional, Sequence, Tuple

from keras_dp.cluster.spec import ClusterInfo, parse_address
from keras_dp.errors import ClusterConfigError

#: Larger task counts are typos (and a list of 10**20 addresses would never be built).
MAX_TASKS = 100_000
PORT_BASE_VARIABLE = "KERAS_DP_PORT_BASE"
SOURCE_VARIABLE = "KERAS_DP_CLUSTER"


def read_int(environ: Mapping[str, str], name: str, *, minimum: int = 0,
             fix: Optional[str] = None, maximum: Optional[int] = None) -> int:
    """Reads an integer variable (ASCII digits, optional sign), with an error that names it."""
    raw = environ.get(name)

    def error(problem: str, default: str = f"set {name} to a whole number"):
        return ClusterConfigError(problem, variable=name, received=raw, fix=fix or default)

    if raw is None:
        raise error("is not set")
    # int() also takes "1_000" and Unicode digits such as "٣": not what launchers write.
    if not re.fullmatch(r"[+-]?[0-9]+", str(raw).strip()):
        raise error("is not a whole number")
    value = int(str(raw).strip())
    if value < minimum:
        raise error(f"must be at least {minimum}", f"set {name} to a whole number >= {minimum}")
    if maximum is not None and value > maximum:
        raise error(f"is {value}, more than the {maximum:,} keras_dp accepts",
                    f"set {name} to a whole number <= {maximum}")
    return value


def read_port_base(environ: Mapping[str, str]) -> int:
    """The first port of derived worker addresses: `KERAS_DP_PORT_BASE`, default 8888."""
    if PORT_BASE_VARIABLE not in environ:
        return 8888
    fix = "set KERAS_DP_PORT_BASE to a free port between 1024 and 65535"
    port = read_int(environ, PORT_BASE_VARIABLE, minimum=1, fix=fix)
    if port > 65535:
        raise ClusterConfigError(f"port {port} is above 65535", variable=PORT_BASE_VARIABLE,
                                 received=environ[PORT_BASE_VARIABLE], fix=fix)
    return port


def ports_fit(port_base: int, count: int) -> None:
    """Checks that `count` consecutive ports from `port_base` stay below 65536."""
    if port_base + count - 1 > 65535:
        raise ClusterConfigError(f"{count} tasks per node from port {port_base} would pass port "
                                 "65535", variable=PORT_BASE_VARIABLE, received=port_base,
                                 fix="choose a lower KERAS_DP_PORT_BASE")


class ClusterEnvironment:
    """One source of cluster information (a launcher, TF_CONFIG, explicit variables).

    Reads a plain `environ` mapping and raises `ClusterConfigError` on bad input. Subclasses
    set `name` (the `KERAS_DP_CLUSTER` value), `title` and `variables` (the first is the rank
    variable, whose presence is detected, by default) and implement `world_size`, `rank` and,
    when they know every task's host, `addresses`. See docs/cluster.md#your-own-environment.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    variables: ClassVar[Tuple[str, ...]] = ()
    #: Other accepted spellings of `name` in `KERAS_DP_CLUSTER`.
    aliases: ClassVar[Tuple[str, ...]] = ()
    #: The variable derived addresses come from (named when one is not valid).
    address_variable: ClassVar[str] = PORT_BASE_VARIABLE
    #: (problem, fix) when `KERAS_DP_CLUSTER` asks for it but it is absent, if not the usual.
    absent: ClassVar[Optional[Tuple[str, str]]] = None
    #: (variable, fix) when the tasks' hosts are unknown and cannot be exchanged.
    no_addresses: ClassVar[Tuple[str, str]] = (
        "KERAS_DP_WORKERS", "set KERAS_DP_WORKERS to every process's host:port")

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        """Whether this environment started (or describes) the current process."""
        return cls.variables[0] in environ

    @classmethod
    def undetected_notes(cls, environ: Mapping[str, str]) -> List[str]:
        """Remarks for the report when no launcher was detected (e.g. "use srun")."""
        return []

    def world_size(self) -> int:
        """Number of processes that train together."""
        raise NotImplementedError

    def rank(self) -> int:
        """Global index of this process, 0-based (0 is the chief)."""
        raise NotImplementedError

    def rank_variable(self) -> str:
        """The variable the rank was read from (for error messages)."""
        return self.variables[0]

    def local_rank(self) -> int:
        """Index of this process among those on its node."""
        return 0

    def local_size(self) -> int:
        """Number of processes on this node."""
        return 1

    def node_rank(self) -> int:
        """Index of this process's node, nodes numbered in order of first rank."""
        if self.local_size() == self.world_size():
            return 0
        addresses = self.addresses(read_port_base(self.environ))
        if addresses is None:
            raise self.no_addresses_error()
        hosts = list(dict.fromkeys(host_of(a) for a in addresses))
        return hosts.index(host_of(addresses[self.rank()]))

    def checked_rank(self, rank: int, problem: str, fix: str) -> int:
        """`rank` if it is below the world size, else the error naming the rank variable."""
        if rank < self.world_size():
            return rank
        name = self.rank_variable()
        raise ClusterConfigError(problem, variable=name, received=self.environ[name], fix=fix)

    def addresses(self, port_base: int) -> Optional[List[str]]:
        """Every task's `host:port`, or None if the environment does not say."""
        return None

    def prefers_exchange(self) -> bool:
        """Whether addresses exchanged through the launcher (MPI) beat derived ones."""
        return False

    def used_variables(self) -> List[str]:
        """Names of the variables this environment read (for the report)."""
        return [name for name in self.variables if name in self.environ]

    def notes(self) -> List[str]:
        """Remarks for the report."""
        return []

    def no_addresses_error(self) -> ClusterConfigError:
        """The error when the tasks' hosts are unknown and cannot be exchanged."""
        variable, fix = self.no_addresses
        return ClusterConfigError(f"{self.title} started {self.world_size()} processes on several "
                                  "nodes but does not tell their host names", variable=variable,
                                  fix=fix)

    def cluster_info(self, port_base: int, exchange=None, notes: Sequence[str] = ()):
        """The validated `ClusterInfo`; `exchange(self)` gathers the addresses when needed."""
        size, rank = self.world_size(), self.rank()
        variables = {k: self.environ[k] for k in self.used_variables()}
        notes = list(notes) + self.notes()
        if size == 1:
            notes.append(f"{self.title} started a single process")
            return ClusterInfo(source=self.name, cluster={}, notes=tuple(notes),
                               variables=variables)
        preferred = exchange is not None and self.prefers_exchange()
        addresses = None if preferred else self.addresses(port_base)
        if addresses is None:
            if exchange is None:
                raise self.no_addresses_error()
            addresses = list(exchange(self))
            notes.append(f"addresses exchanged through {self.title}"
                         + (" (a free port per task)" if preferred else ""))
        for i, address in enumerate(addresses):
            parse_address(address, variable=self.address_variable, field=f"derived address {i}",
                          received=self.environ.get(self.address_variable, address))
        if len(set(a.lower() for a in addresses)) != len(addresses):
            raise ClusterConfigError(
                f"the derived worker addresses repeat: {addresses}", variable=PORT_BASE_VARIABLE,
                received=port_base, fix="list the addresses in KERAS_DP_WORKERS")
        return ClusterInfo(source=self.name, cluster={"worker": tuple(addresses)},
                           task_type="worker", task_index=rank,
                           local_rank=self.local_rank(), local_size=self.local_size(),
                           notes=tuple(notes), variables=variables)


def host_of(address: str) -> str:
    """The host part of `host:port`, lower case (for grouping tasks by node)."""
    return address.rpartition(":")[0].lower()


def local_placement(addresses: Sequence[str], index: int) -> Tuple[int, int]:
    """Local rank and size from the tasks that share this task's host."""
    host = host_of(addresses[index])
    same = [i for i, a in enumerate(addresses) if host_of(a) == host]
    return same.index(index), len(same)
