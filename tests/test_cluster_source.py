"""Which source is used: none, or the one KERAS_DP_CLUSTER forces (unknown, absent: refused)."""

from _cluster import SLURM_2x2, table_tests
from keras_dp.errors import ClusterConfigError

VALID = [
    ("nothing", {}, dict(source="single", num_workers=1, is_chief=True, worker_addresses=[],
                         tf_config={"cluster": {}, "task": {}})),
    ("forced_single_ignores_everything",
     {**SLURM_2x2, "KERAS_DP_CLUSTER": "single"}, dict(source="single")),
    ("forced_slurm_over_mpi",
     {**SLURM_2x2, "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "KERAS_DP_CLUSTER": "slurm"}, dict(source="slurm", num_workers=4)),
]

INVALID = [
    ("unknown_forced_source", {"KERAS_DP_CLUSTER": "yarn"}, "KERAS_DP_CLUSTER",
     "tf_config, explicit, mpi, slurm, kubernetes, single", ClusterConfigError),
    ("forced_source_absent", {"KERAS_DP_CLUSTER": "slurm"}, "KERAS_DP_CLUSTER",
     "variables are not set", ClusterConfigError),
    ("forced_tf_config_absent", {"KERAS_DP_CLUSTER": "tf_config"}, "KERAS_DP_CLUSTER",
     "TF_CONFIG is not set", ClusterConfigError),
]


test_valid_environments, test_bad_input_names_variable_field_and_fix = table_tests(
    VALID, INVALID)
