"""Kubernetes Indexed Jobs and JobSets."""

from _cluster import table_tests
from keras_dp.errors import ClusterConfigError

VALID = [
    ("kubernetes_indexed_job",
     {"JOB_COMPLETION_INDEX": "2", "KERAS_DP_NUM_WORKERS": "3",
      "KERAS_DP_HOST_PATTERN": "train-{index}.train-workers", "KERAS_DP_PORT_BASE": "2222"},
     dict(source="kubernetes", task_index=2,
          worker_addresses=["train-0.train-workers:2222", "train-1.train-workers:2222",
                            "train-2.train-workers:2222"])),
    ("kubernetes_jobset_default_pattern",
     {"JOB_COMPLETION_INDEX": "1", "KERAS_DP_NUM_WORKERS": "2", "JOBSET_NAME": "lm",
      "REPLICATED_JOB_NAME": "workers", "JOB_INDEX": "0"},
     dict(worker_addresses=["lm-workers-0-0.lm:8888", "lm-workers-0-1.lm:8888"],
          task_index=1)),
    ("kubernetes_jobset_several_jobs",
     {"JOB_COMPLETION_INDEX": "1", "KERAS_DP_NUM_WORKERS": "4", "KERAS_DP_PODS_PER_JOB": "2",
      "JOBSET_NAME": "lm", "REPLICATED_JOB_NAME": "w", "JOB_INDEX": "1"},
     dict(task_index=3, worker_addresses=["lm-w-0-0.lm:8888", "lm-w-0-1.lm:8888",
                                          "lm-w-1-0.lm:8888", "lm-w-1-1.lm:8888"])),
]

INVALID = [
    ("kubernetes_missing_count",
     {"JOB_COMPLETION_INDEX": "0", "KERAS_DP_HOST_PATTERN": "t-{index}.s"},
     "KERAS_DP_NUM_WORKERS", "is not set", ClusterConfigError),
    ("kubernetes_missing_pattern",
     {"JOB_COMPLETION_INDEX": "0", "KERAS_DP_NUM_WORKERS": "2"},
     "KERAS_DP_HOST_PATTERN", "is not set", ClusterConfigError),
    ("kubernetes_pattern_without_index",
     {"JOB_COMPLETION_INDEX": "0", "KERAS_DP_NUM_WORKERS": "2",
      "KERAS_DP_HOST_PATTERN": "t-{rank}.s"},
     "KERAS_DP_HOST_PATTERN", "{index}", ClusterConfigError),
    ("kubernetes_index_out_of_range",
     {"JOB_COMPLETION_INDEX": "3", "KERAS_DP_NUM_WORKERS": "2",
      "KERAS_DP_HOST_PATTERN": "t-{index}.s"},
     "JOB_COMPLETION_INDEX", "out of range", ClusterConfigError),
]


test_valid_environments, test_bad_input_names_variable_field_and_fix = table_tests(
    VALID, INVALID)
