"""Base classes shared by the cluster environments.

Each environment is one small class that reads a plain `environ` mapping:
`detect(environ)` says whether the variables it owns are present, and the
instance methods turn them into numbers and addresses, raising
`ClusterConfigError` (naming the variable and the fix) on bad input.
"""

from __future__ import annotations

import re
from typing import ClassVar, List, Mapping, Optional, Tuple

from keras_dp.errors import ClusterConfigError

DEFAULT_PORT_BASE = 8888
#: The most tasks a cluster may have: larger counts are typos (and a list of
#: 10**20 addresses would never finish being built).
MAX_TASKS = 100_000
PORT_BASE_VARIABLE = "KERAS_DP_PORT_BASE"


def read_int(environ: Mapping[str, str], name: str, *, minimum: Optional[int] = 0,
             fix: Optional[str] = None, maximum: Optional[int] = None) -> int:
    """Reads an integer variable (ASCII digits, optional sign), with an error that names it."""
    raw = environ.get(name)
    if raw is None:
        raise ClusterConfigError(
            "is not set", variable=name,
            fix=fix or f"set {name} to a whole number")
    text = str(raw).strip()
    # int() also takes "1_000", "²"-free Unicode digits such as "٣": not what launchers write.
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ClusterConfigError(
            "is not a whole number", variable=name, received=raw,
            fix=fix or f"set {name} to a whole number")
    value = int(text)
    if minimum is not None and value < minimum:
        raise ClusterConfigError(
            f"must be at least {minimum}", variable=name, received=raw,
            fix=fix or f"set {name} to a whole number >= {minimum}")
    if maximum is not None and value > maximum:
        raise ClusterConfigError(
            f"is {value}, more than the {maximum:,} keras_dp accepts", variable=name,
            received=raw, fix=fix or f"set {name} to a whole number <= {maximum}")
    return value


def read_port_base(environ: Mapping[str, str], default: Optional[int] = None) -> int:
    """The first port used for derived worker addresses (`KERAS_DP_PORT_BASE`)."""
    if PORT_BASE_VARIABLE not in environ:
        return DEFAULT_PORT_BASE if default is None else default
    port = read_int(environ, PORT_BASE_VARIABLE, minimum=1,
                    fix="set KERAS_DP_PORT_BASE to a free port between 1024 and 65535")
    if port > 65535:
        raise ClusterConfigError(
            f"port {port} is above 65535", variable=PORT_BASE_VARIABLE,
            received=environ[PORT_BASE_VARIABLE],
            fix="set KERAS_DP_PORT_BASE to a free port between 1024 and 65535")
    return port


def ports_fit(port_base: int, count: int, variable: str = PORT_BASE_VARIABLE) -> None:
    """Checks that `count` consecutive ports from `port_base` stay below 65536."""
    if port_base + count - 1 > 65535:
        raise ClusterConfigError(
            f"{count} tasks per node from port {port_base} would pass port 65535",
            variable=variable, received=port_base,
            fix="choose a lower KERAS_DP_PORT_BASE")


class LauncherEnvironment:
    """A process launcher (srun, mpirun, a Kubernetes Job) that numbers its tasks.

    Subclasses read which task this process is and how many there are, and,
    where the launcher tells, every task's host so that addresses can be
    derived as `host:port_base + local index`.
    """

    #: Short name used in reports and in `KERAS_DP_CLUSTER`.
    name: ClassVar[str] = ""
    #: Human-readable name.
    title: ClassVar[str] = ""
    #: Variables that make `detect()` true (any of them), for docs and reports.
    detect_variables: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    @classmethod
    def detect(cls, environ: Mapping[str, str]) -> bool:
        """Whether this launcher started the current process."""
        raise NotImplementedError

    def rank(self) -> int:
        """Global index of this process, 0-based."""
        raise NotImplementedError

    def world_size(self) -> int:
        """Number of processes the launcher started."""
        raise NotImplementedError

    def rank_variable(self) -> str:
        """The variable the rank was read from (for error messages)."""
        raise NotImplementedError

    def local_rank(self) -> int:
        """Index of this process among those on its node."""
        return 0

    def local_size(self) -> int:
        """Number of processes on this node."""
        return 1

    def addresses(self, port_base: int) -> Optional[List[str]]:
        """Every task's `host:port`, or None if the launcher does not say."""
        return None

    def prefers_exchange(self) -> bool:
        """Whether addresses exchanged through the launcher beat derived ones.

        True for launchers that can pass messages between their tasks (MPI),
        where each task then picks a free port instead of a fixed one.
        """
        return False

    def used_variables(self) -> List[str]:
        """Names of the variables this environment read (for the report)."""
        return [name for name in self.detect_variables if name in self.environ]

    def notes(self) -> List[str]:
        """Remarks for the report."""
        return []
