"""Worker addresses exchanged through the MPI launch itself (mpi4py's allgather).

mpi4py is imported only when the exchange runs. See docs/cluster.md, "Running under mpirun".
"""

from __future__ import annotations

import importlib.util
import socket
from typing import Callable, List, Mapping

from keras_dp.cluster.base import PORT_BASE_VARIABLE, ClusterEnvironment, read_port_base
from keras_dp.cluster.mpi import HOST_VARIABLE, SWITCH_VARIABLE
from keras_dp.cluster.spec import check_no_duplicates, parse_address
from keras_dp.envflags import env_flag
from keras_dp.errors import ClusterConfigError

_MAX_TRIES = 5


def available() -> bool:
    """Whether mpi4py is installed (checked without importing it)."""
    return importlib.util.find_spec("mpi4py") is not None


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether `keras_dp.scope()` should exchange addresses under MPI."""
    setting = str(environ.get(SWITCH_VARIABLE, "auto")).strip().lower()
    return (setting == "auto" or env_flag(SWITCH_VARIABLE, True, environ)) and available()


def _pick_port(launcher: ClusterEnvironment, attempt: int) -> int:
    if PORT_BASE_VARIABLE in launcher.environ:
        return read_port_base(launcher.environ) + launcher.local_rank()
    import portpicker

    return portpicker.pick_unused_port()


def exchange_addresses(launcher: ClusterEnvironment, *, comm=None,
                       pick_port: Callable[[ClusterEnvironment, int], int] = _pick_port
                       ) -> List[str]:
    """Every rank's `host:port`, gathered through MPI (a collective: every rank calls it).

    Args:
        launcher: The `keras_dp.cluster.MPIEnvironment`.
        comm: An mpi4py communicator (default `MPI.COMM_WORLD`), or a stand-in.
        pick_port: `(launcher, attempt) -> port` (default: a free port, or
            `KERAS_DP_PORT_BASE + local rank` when that variable is set).

    Returns:
        The worker addresses; rank r's is entry r.

    Raises:
        ClusterConfigError: MPI disagrees with the launcher's variables (mpi4py built for
            another MPI), or the addresses collide.
    """
    if launcher.name != "mpi":
        raise ClusterConfigError(
            f"an MPI address exchange was asked for under {launcher.title}",
            variable="KERAS_DP_CLUSTER", received=launcher.name,
            fix="run under mpirun, or list the addresses in KERAS_DP_WORKERS")
    if comm is None:
        try:  # importing mpi4py initialises MPI
            from mpi4py import MPI
        except (ImportError, RuntimeError, OSError) as exc:
            raise ClusterConfigError(
                f"mpi4py is installed but cannot load an MPI library ({exc})",
                variable=SWITCH_VARIABLE,
                fix="install Open MPI's libraries (apt-get install openmpi-bin libopenmpi-dev), "
                    "or set KERAS_DP_HOSTFILE (or KERAS_DP_WORKERS), or KERAS_DP_MPI_EXCHANGE=0 "
                    "to use 127.0.0.1:KERAS_DP_PORT_BASE+rank on one node") from None
        comm = MPI.COMM_WORLD
    rank, size = launcher.rank(), launcher.world_size()
    if (comm.Get_rank(), comm.Get_size()) != (rank, size):
        raise ClusterConfigError(
            f"MPI reports rank {comm.Get_rank()} of {comm.Get_size()} but "
            f"{launcher.rank_variable()} says rank {rank} of {size}: mpi4py was built for "
            "another MPI library than the mpirun that started this process",
            variable=launcher.rank_variable(), received=launcher.environ.get(
                launcher.rank_variable()),
            fix="reinstall mpi4py against this MPI (pip install --no-binary mpi4py mpi4py), "
                "or set KERAS_DP_HOSTFILE (or KERAS_DP_WORKERS) and KERAS_DP_MPI_EXCHANGE=0")
    host = "127.0.0.1" if launcher.all_local() else (
        str(launcher.environ.get(HOST_VARIABLE, "")).strip() or socket.gethostname())
    mine = f"{host}:{pick_port(launcher, 0)}"
    fixed = PORT_BASE_VARIABLE in launcher.environ
    for attempt in range(1, _MAX_TRIES + 1):
        # Every rank sees the same list, so all take the same number of rounds.
        addresses = [str(a) for a in comm.allgather(mine)]
        if fixed or len({a.lower() for a in addresses}) == len(addresses):
            break
        # Two ranks on one host drew the same free port: the later one draws again.
        if mine.lower() in {a.lower() for a in addresses[:rank]}:
            mine = f"{host}:{pick_port(launcher, attempt)}"
    for i, address in enumerate(addresses):
        parse_address(address, variable="MPI address exchange", field=f"rank {i}",
                      received=addresses)
    check_no_duplicates(addresses, variable=PORT_BASE_VARIABLE if fixed else HOST_VARIABLE,
                        received=addresses)
    return addresses
