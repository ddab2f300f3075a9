#!/bin/bash
# Open MPI: mpirun starts the workers; keras_dp reads OMPI_COMM_WORLD_RANK, _SIZE,
# _LOCAL_RANK and _LOCAL_SIZE. On one node the workers talk over 127.0.0.1
# (ports KERAS_DP_PORT_BASE + rank). On several nodes keras_dp takes every rank's
# host from the hostfile named by KERAS_DP_HOSTFILE (or exchanges addresses
# through MPI when mpi4py is installed: pip install "keras-dp[mpi]").
#
#   HOSTFILE=hosts.txt NP=4 examples/mpi/run.sh [keras-dp train options]
set -euo pipefail
NP=${NP:-2}
export KERAS_DP_PORT_BASE=${KERAS_DP_PORT_BASE:-29500}
if [ -n "${HOSTFILE:-}" ]; then
  export KERAS_DP_HOSTFILE=$HOSTFILE
  exec mpirun -np "$NP" --hostfile "$HOSTFILE" --map-by slot \
    -x KERAS_DP_HOSTFILE -x KERAS_DP_PORT_BASE keras-dp train "$@"
fi
exec mpirun -np "$NP" -x KERAS_DP_PORT_BASE keras-dp train "$@"
