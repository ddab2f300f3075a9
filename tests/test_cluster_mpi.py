"""MPI launches (Open MPI, MPICH) as cluster sources; the address exchange is in test_mpi.py."""

from _cluster import SLURM_2x2, table_tests
from keras_dp.errors import ClusterConfigError

VALID = [
    ("mpi_open_mpi_single_node",
     {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
     dict(source="mpi", worker_addresses=["127.0.0.1:8888", "127.0.0.1:8889"], task_index=1,
          local_rank=1, local_size=2)),
    ("mpi_mpich_single_node",
     {"PMI_RANK": "0", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "3"},
     dict(source="mpi", num_workers=3, is_chief=True)),
    ("mpi_beats_slurm",
     {**SLURM_2x2, "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
     dict(source="mpi", num_workers=2)),
    ("mpi_single_rank",
     {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"},
     dict(source="mpi", num_workers=1)),
]

INVALID = [
    ("mpi_multi_node_without_addresses",
     {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4",
      "OMPI_COMM_WORLD_LOCAL_RANK": "0", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
     "KERAS_DP_HOSTFILE", "does not tell their host names", ClusterConfigError),
    ("mpi_rank_out_of_range",
     {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"},
     "OMPI_COMM_WORLD_RANK", "out of range", ClusterConfigError),
    ("mpi_hostfile_missing",
     {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "KERAS_DP_HOSTFILE": "/nonexistent/hosts"},
     "KERAS_DP_HOSTFILE", "cannot read", ClusterConfigError),
    ("mpi_hostfile_path_with_a_nul_byte",   # was a bare ValueError from open()
     {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "KERAS_DP_HOSTFILE": "hosts\x00.txt"},
     "KERAS_DP_HOSTFILE", "cannot read", ClusterConfigError),
    ("mpi_forced_but_absent", {"KERAS_DP_CLUSTER": "mpi"},  # was a bare StopIteration
     "KERAS_DP_CLUSTER", "asks for the MPI source", ClusterConfigError),
]


test_valid_environments, test_bad_input_names_variable_field_and_fix = table_tests(
    VALID, INVALID)
