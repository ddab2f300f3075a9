"""KERAS_DP_WORKERS and KERAS_DP_TASK_INDEX (the index may come from a launcher), and bad values."""

import pytest

from _cluster import table_tests
from keras_dp.cluster import resolve_cluster
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError

VALID = [
    ("explicit",
     {"KERAS_DP_WORKERS": "n1:2222, n2:2222,n3:2222", "KERAS_DP_TASK_INDEX": "2"},
     dict(source="explicit", num_workers=3, task_index=2, is_chief=False,
          worker_addresses=["n1:2222", "n2:2222", "n3:2222"],
          tf_config={"cluster": {"worker": ["n1:2222", "n2:2222", "n3:2222"]},
                     "task": {"type": "worker", "index": 2}})),
    ("explicit_index_zero_is_chief",
     {"KERAS_DP_WORKERS": "127.0.0.1:5000,127.0.0.1:5001", "KERAS_DP_TASK_INDEX": "0"},
     dict(is_chief=True, local_rank=0, local_size=2)),
    ("explicit_single_entry_is_single",
     {"KERAS_DP_WORKERS": "localhost:5000", "KERAS_DP_TASK_INDEX": "0"},
     dict(source="explicit", num_workers=1, is_multi_worker=False)),
    ("explicit_rank_from_slurm",
     {"KERAS_DP_WORKERS": "a:1,b:1", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
      "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"},
     dict(source="explicit", task_index=1)),
    ("explicit_rank_from_mpi",
     {"KERAS_DP_WORKERS": "a:1,b:1", "OMPI_COMM_WORLD_RANK": "1",
      "OMPI_COMM_WORLD_SIZE": "2"},
     dict(source="explicit", task_index=1)),
]

INVALID = [
    ("explicit_missing_index", {"KERAS_DP_WORKERS": "a:1,b:1"},
     "KERAS_DP_TASK_INDEX", "is not set", ClusterConfigError),
    ("explicit_index_out_of_range", {"KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "2"},
     "KERAS_DP_TASK_INDEX", "out of range", ClusterConfigError),
    ("explicit_index_not_number", {"KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "one"},
     "KERAS_DP_TASK_INDEX", "whole number", ClusterConfigError),
    ("explicit_empty_list", {"KERAS_DP_WORKERS": " , ,", "KERAS_DP_TASK_INDEX": "0"},
     "KERAS_DP_WORKERS", "empty", ClusterConfigError),
    ("explicit_duplicate", {"KERAS_DP_WORKERS": "a:1,A:1", "KERAS_DP_TASK_INDEX": "0"},
     "KERAS_DP_WORKERS", "appears twice", ClusterConfigError),
    ("explicit_bad_port", {"KERAS_DP_WORKERS": "a:1,b:99999", "KERAS_DP_TASK_INDEX": "0"},
     "KERAS_DP_WORKERS", "outside 1-65535", ClusterConfigError),
    ("index_without_workers", {"KERAS_DP_TASK_INDEX": "1"},
     "KERAS_DP_TASK_INDEX", "KERAS_DP_WORKERS is not", ClusterConfigError),
    ("explicit_index_conflicts_with_slurm",
     {"KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "0", "SLURM_PROCID": "1",
      "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]"},
     "KERAS_DP_TASK_INDEX", "SLURM_PROCID=1", ConflictingSourcesError),
    ("explicit_count_conflicts_with_mpi",
     {"KERAS_DP_WORKERS": "a:1,b:1,c:1", "OMPI_COMM_WORLD_RANK": "0",
      "OMPI_COMM_WORLD_SIZE": "2"},
     "KERAS_DP_WORKERS", "started 2 processes", ConflictingSourcesError),
]


test_valid_environments, test_bad_input_names_variable_field_and_fix = table_tests(
    VALID, INVALID)


def test_error_ends_with_received_value():
    with pytest.raises(ClusterConfigError) as caught:
        resolve_cluster({"KERAS_DP_WORKERS": "a:1,b:x", "KERAS_DP_TASK_INDEX": "0"})
    assert str(caught.value).endswith("Received: KERAS_DP_WORKERS=a:1,b:x")
