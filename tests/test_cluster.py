"""Table-driven tests of cluster resolution: every source, every bad input.

Each case is a plain dict `environ`; no test touches os.environ.
"""

import json

import pytest

from keras_dp.cluster import ClusterInfo, expand_hostlist, expand_tasks_per_node, resolve_cluster
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError


def tf_config(cluster, task=None, **extra):
    config = {"cluster": cluster, **extra}
    if task is not None:
        config["task"] = task
    return json.dumps(config)


SLURM_2x2 = {
    "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3",
    "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[01-02]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
}

# (id, environ, expected fields)
VALID = [
    ("nothing", {}, dict(source="single", num_workers=1, is_chief=True, worker_addresses=[],
                         tf_config={"cluster": {}, "task": {}})),
    ("tf_config_kubeflow_chief_workers",
     {"TF_CONFIG": tf_config({"chief": ["job-chief-0:2222"],
                              "worker": ["job-worker-0:2222", "job-worker-1:2222"]},
                             {"type": "worker", "index": 1})},
     dict(source="tf_config", num_workers=3, task_type="worker", task_index=1,
          worker_index=2, is_chief=False,
          worker_addresses=["job-chief-0:2222", "job-worker-0:2222", "job-worker-1:2222"])),
    ("tf_config_kubeflow_chief_is_chief",
     {"TF_CONFIG": tf_config({"chief": ["c:2222"], "worker": ["w0:2222"]},
                             {"type": "chief", "index": 0})},
     dict(source="tf_config", num_workers=2, worker_index=0, is_chief=True)),
    ("tf_config_ray_workers_only",
     {"TF_CONFIG": tf_config({"worker": ["10.0.0.1:4000", "10.0.0.2:4000"]},
                             {"type": "worker", "index": 0})},
     dict(source="tf_config", num_workers=2, is_chief=True, worker_index=0)),
    ("tf_config_vertex_extras_kept",
     {"TF_CONFIG": tf_config({"chief": ["cmle-training-master-0:2222"],
                              "worker": ["cmle-training-worker-0:2222"]},
                             {"type": "worker", "index": 0, "trial": ""},
                             environment="cloud", job={"args": ["--x"]})},
     dict(source="tf_config", environment="cloud", is_chief=False, num_workers=2)),
    ("tf_config_rpc_layer",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1},
                             rpc_layer="grpc")},
     dict(rpc_layer="grpc", task_index=1)),
    ("tf_config_evaluator_does_not_train",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"], "evaluator": ["e:1"]},
                             {"type": "evaluator", "index": 0})},
     dict(task_type="evaluator", worker_index=None, is_chief=False, is_training_task=False,
          num_workers=2)),
    ("tf_config_ipv6",
     {"TF_CONFIG": tf_config({"worker": ["[::1]:2222", "[::1]:2223"]},
                             {"type": "worker", "index": 1})},
     dict(worker_addresses=["[::1]:2222", "[::1]:2223"])),
    ("tf_config_string_index",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": "1"})},
     dict(task_index=1)),
    ("tf_config_empty_object_is_single", {"TF_CONFIG": "{}"}, dict(source="single")),
    ("tf_config_blank_is_unset", {"TF_CONFIG": "  "}, dict(source="single")),
    ("tf_config_local_placement",
     {"TF_CONFIG": tf_config({"worker": ["h1:1", "h1:2", "h2:1", "h2:2"]},
                             {"type": "worker", "index": 3})},
     dict(local_rank=1, local_size=2)),
    ("tf_config_same_as_explicit",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}),
      "KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "1"},
     dict(source="tf_config", task_index=1)),
    ("tf_config_beats_slurm",
     {**SLURM_2x2, "TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]},
                                          {"type": "worker", "index": 0})},
     dict(source="tf_config", num_workers=2)),
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
    ("slurm_block_2x2", SLURM_2x2,
     dict(source="slurm", num_workers=4, task_index=3, local_rank=1, local_size=2,
          worker_addresses=["gpu01:8888", "gpu01:8889", "gpu02:8888", "gpu02:8889"])),
    ("slurm_port_base",
     {**SLURM_2x2, "KERAS_DP_PORT_BASE": "12000"},
     dict(worker_addresses=["gpu01:12000", "gpu01:12001", "gpu02:12000", "gpu02:12001"])),
    ("slurm_uneven_tasks_per_node",
     {"SLURM_PROCID": "4", "SLURM_STEP_NUM_TASKS": "5", "SLURM_STEP_NODELIST": "a[1-3]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_LOCALID": "0"},
     dict(worker_addresses=["a1:8888", "a1:8889", "a2:8888", "a2:8889", "a3:8888"],
          task_index=4, local_size=1)),
    ("slurm_hostlist_padding_and_groups",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4",
      "SLURM_STEP_NODELIST": "node[008-009],gpu-[7,10]x", "SLURM_STEP_TASKS_PER_NODE": "1(x4)"},
     dict(worker_addresses=["node008:8888", "node009:8888", "gpu-7x:8888", "gpu-10x:8888"])),
    ("slurm_fallback_job_variables",
     {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "c[1-2]",
      "SLURM_TASKS_PER_NODE": "1(x2)"},
     dict(source="slurm", worker_addresses=["c1:8888", "c2:8888"], task_index=1)),
    ("slurm_one_node_no_tasks_per_node",
     {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "solo"},
     dict(worker_addresses=["solo:8888", "solo:8889"], local_rank=1, local_size=2)),
    ("slurm_cyclic",
     {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_DISTRIBUTION": "cyclic",
      "SLURM_LOCALID": "0", "SLURM_NODEID": "1"},
     dict(worker_addresses=["n1:8888", "n2:8888", "n1:8889", "n2:8889"])),
    ("slurm_single_task",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NODELIST": "n1"},
     dict(source="slurm", num_workers=1, is_multi_worker=False)),
    ("slurm_batch_script_is_single",
     {"SLURM_JOB_ID": "5", "SLURM_PROCID": "0", "SLURM_NTASKS": "4",
      "SLURM_JOB_NODELIST": "n[1-4]"},
     dict(source="single", num_workers=1)),
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
    ("forced_single_ignores_everything",
     {**SLURM_2x2, "KERAS_DP_CLUSTER": "single"}, dict(source="single")),
    ("forced_slurm_over_mpi",
     {**SLURM_2x2, "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2",
      "KERAS_DP_CLUSTER": "slurm"}, dict(source="slurm", num_workers=4)),
]


@pytest.mark.parametrize("environ,expected", [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_environments(environ, expected):
    info = resolve_cluster(environ)
    assert isinstance(info, ClusterInfo)
    for field, value in expected.items():
        if field == "tf_config":
            assert info.to_tf_config() == value
        else:
            assert getattr(info, field) == value, field


def test_tf_config_is_never_rewritten():
    raw = {"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
           "task": {"type": "worker", "index": 0, "trial": "7"},
           "environment": "cloud", "rpc_layer": "grpc", "job": {"x": 1}}
    info = resolve_cluster({"TF_CONFIG": json.dumps(raw)})
    assert info.to_tf_config() == raw
    assert json.loads(info.to_json()) == raw


def test_tf_config_output_is_valid_tf_config_for_derived_sources():
    info = resolve_cluster(SLURM_2x2)
    again = resolve_cluster({"TF_CONFIG": info.to_json()})
    assert again.worker_addresses == info.worker_addresses
    assert (again.task_type, again.task_index) == (info.task_type, info.task_index)


# (id, environ, variable named, field or words that must appear, error class)
INVALID = [
    ("tf_config_malformed_json", {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]'},
     "TF_CONFIG", "not valid JSON", ClusterConfigError),
    ("tf_config_not_object", {"TF_CONFIG": '["a:1"]'}, "TF_CONFIG", "JSON object",
     ClusterConfigError),
    ("tf_config_missing_task", {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]})},
     "TF_CONFIG", "field 'task'", ClusterConfigError),
    ("tf_config_missing_cluster", {"TF_CONFIG": json.dumps({"task": {"type": "worker",
                                                                      "index": 0}})},
     "TF_CONFIG", "field 'cluster'", ClusterConfigError),
    ("tf_config_missing_type", {"TF_CONFIG": tf_config({"worker": ["a:1"]}, {"index": 0})},
     "TF_CONFIG", "field 'task.type'", ClusterConfigError),
    ("tf_config_missing_index", {"TF_CONFIG": tf_config({"worker": ["a:1"]},
                                                        {"type": "worker"})},
     "TF_CONFIG", "field 'task.index'", ClusterConfigError),
    ("tf_config_index_out_of_range",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 2})},
     "TF_CONFIG", "valid: 0-1", ClusterConfigError),
    ("tf_config_negative_index",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": -1})},
     "TF_CONFIG", "field 'task.index'", ClusterConfigError),
    ("tf_config_bool_index",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": True})},
     "TF_CONFIG", "whole number", ClusterConfigError),
    # Issue 12: the fix ended "0, 1, ." (the error's own full stop ate the ellipsis).
    ("tf_config_bool_index_fix_is_whole",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": True})},
     "TF_CONFIG", "Fix: write \"index\": N, this process's position in its job as a whole "
     "number (0 for the first). Received", ClusterConfigError),
    ("tf_config_duplicate_addresses",
     {"TF_CONFIG": tf_config({"chief": ["a:1"], "worker": ["a:1"]},
                             {"type": "chief", "index": 0})},
     "TF_CONFIG", "appears twice", ClusterConfigError),
    ("tf_config_port_not_number",
     {"TF_CONFIG": tf_config({"worker": ["a:http"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "field 'cluster.worker[0]'", ClusterConfigError),
    ("tf_config_port_out_of_range",
     {"TF_CONFIG": tf_config({"worker": ["a:70000"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "outside 1-65535", ClusterConfigError),
    ("tf_config_port_zero",
     {"TF_CONFIG": tf_config({"worker": ["a:0"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "outside 1-65535", ClusterConfigError),
    # Issue 12: a ps job was accepted, then refused later by the strategy (or ignored).
    ("tf_config_ps_roles_refused",
     {"TF_CONFIG": tf_config({"chief": ["c:1"], "worker": ["w:1"], "ps": ["p:1", "p:2"]},
                             {"type": "ps", "index": 1})},
     "TF_CONFIG", "parameter-server training is not supported", ClusterConfigError),
    ("tf_config_ps_refused_on_a_worker",
     {"TF_CONFIG": tf_config({"worker": ["w:1", "w:2"], "ps": ["p:1"]},
                             {"type": "worker", "index": 0})},
     "TF_CONFIG", "field 'cluster.ps'", ClusterConfigError),
    # Issue 12: ":2222" was said to have "no port"; it has no host.
    ("tf_config_no_host",
     {"TF_CONFIG": tf_config({"worker": [":2222", "b:1"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "':2222' has no host. Fix: put the host before the port, e.g. 10.0.0.1:2222",
     ClusterConfigError),
    ("tf_config_no_port",
     {"TF_CONFIG": tf_config({"worker": ["a"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "has no port", ClusterConfigError),
    ("tf_config_url_scheme",
     {"TF_CONFIG": tf_config({"worker": ["grpc://a:1"]}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "scheme", ClusterConfigError),
    ("tf_config_unknown_role",
     {"TF_CONFIG": tf_config({"master": ["a:1"]}, {"type": "master", "index": 0})},
     "TF_CONFIG", "unknown role 'master'", ClusterConfigError),
    ("tf_config_unknown_task_type",
     {"TF_CONFIG": tf_config({"worker": ["a:1"]}, {"type": "trainer", "index": 0})},
     "TF_CONFIG", "unknown task type", ClusterConfigError),
    ("tf_config_task_type_not_in_cluster",
     {"TF_CONFIG": tf_config({"worker": ["a:1"]}, {"type": "chief", "index": 0})},
     "TF_CONFIG", "has no job", ClusterConfigError),
    ("tf_config_empty_worker_list",
     {"TF_CONFIG": tf_config({"worker": []}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "empty address list", ClusterConfigError),
    ("tf_config_only_ps",
     {"TF_CONFIG": tf_config({"ps": ["p:1"]}, {"type": "ps", "index": 0})},
     "TF_CONFIG", "no 'chief' or 'worker'", ClusterConfigError),
    ("tf_config_two_chiefs",
     {"TF_CONFIG": tf_config({"chief": ["a:1", "b:1"]}, {"type": "chief", "index": 0})},
     "TF_CONFIG", "allows one", ClusterConfigError),
    ("tf_config_job_not_list",
     {"TF_CONFIG": tf_config({"worker": "a:1,b:1"}, {"type": "worker", "index": 0})},
     "TF_CONFIG", "must be a list", ClusterConfigError),
    ("tf_config_conflicts_with_explicit",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}),
      "KERAS_DP_WORKERS": "x:1,y:1"},
     "KERAS_DP_WORKERS", "TF_CONFIG lists workers", ConflictingSourcesError),
    ("tf_config_index_conflicts_with_explicit_index",
     {"TF_CONFIG": tf_config({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}),
      "KERAS_DP_WORKERS": "a:1,b:1", "KERAS_DP_TASK_INDEX": "1"},
     "KERAS_DP_TASK_INDEX", "TF_CONFIG's task", ConflictingSourcesError),
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
    ("slurm_tasks_per_node_count_mismatch",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x3)"},
     "SLURM_STEP_TASKS_PER_NODE", "has 2 nodes", ClusterConfigError),
    ("slurm_num_tasks_disagree",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "5", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2)"},
     "SLURM_STEP_TASKS_PER_NODE", "adds up to 4", ClusterConfigError),
    ("slurm_uneven_without_tasks_per_node",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "n[1-2]"},
     "SLURM_STEP_NUM_TASKS", "do not divide evenly", ClusterConfigError),
    ("slurm_procid_out_of_range",
     {"SLURM_PROCID": "4", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2)"},
     "SLURM_PROCID", "out of range", ClusterConfigError),
    ("slurm_procid_not_number",
     {"SLURM_PROCID": "x", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]"},
     "SLURM_PROCID", "whole number", ClusterConfigError),
    ("slurm_bad_hostlist",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2"},
     "SLURM_STEP_NODELIST", "unclosed", ClusterConfigError),
    ("slurm_bad_tasks_per_node",
     {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]",
      "SLURM_STEP_TASKS_PER_NODE": "1(y2)"},
     "SLURM_STEP_TASKS_PER_NODE", "bad entry", ClusterConfigError),
    ("slurm_localid_disagrees",
     {**SLURM_2x2, "SLURM_LOCALID": "0"}, "SLURM_LOCALID", "local task 1",
     ClusterConfigError),
    ("slurm_nodeid_disagrees",
     {**SLURM_2x2, "SLURM_NODEID": "0"}, "SLURM_NODEID", "on node 1", ClusterConfigError),
    ("slurm_unsupported_distribution",
     {**SLURM_2x2, "SLURM_DISTRIBUTION": "plane=2"}, "SLURM_DISTRIBUTION", "not supported",
     ClusterConfigError),
    ("slurm_port_base_not_number",
     {**SLURM_2x2, "KERAS_DP_PORT_BASE": "high"}, "KERAS_DP_PORT_BASE", "whole number",
     ClusterConfigError),
    ("slurm_port_base_overflows",
     {**SLURM_2x2, "KERAS_DP_PORT_BASE": "65535"}, "KERAS_DP_PORT_BASE", "65535",
     ClusterConfigError),
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
    ("unknown_forced_source", {"KERAS_DP_CLUSTER": "yarn"}, "KERAS_DP_CLUSTER",
     "tf_config, explicit, mpi, slurm, kubernetes, single", ClusterConfigError),
    ("forced_source_absent", {"KERAS_DP_CLUSTER": "slurm"}, "KERAS_DP_CLUSTER",
     "variables are not set", ClusterConfigError),
    ("forced_tf_config_absent", {"KERAS_DP_CLUSTER": "tf_config"}, "KERAS_DP_CLUSTER",
     "TF_CONFIG is not set", ClusterConfigError),
]


@pytest.mark.parametrize("environ,variable,words,error",
                         [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_bad_input_names_variable_field_and_fix(environ, variable, words, error):
    with pytest.raises(error) as caught:
        resolve_cluster(environ)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(variable), message
    assert words in message, message
    assert "Fix:" in message, message
    assert caught.value.variable == variable


def test_error_ends_with_received_value():
    with pytest.raises(ClusterConfigError) as caught:
        resolve_cluster({"KERAS_DP_WORKERS": "a:1,b:x", "KERAS_DP_TASK_INDEX": "0"})
    assert str(caught.value).endswith("Received: KERAS_DP_WORKERS=a:1,b:x")


def test_port_base_argument_beats_variable():
    info = resolve_cluster({**SLURM_2x2, "KERAS_DP_PORT_BASE": "9000"}, port_base=7000)
    assert info.worker_addresses[0] == "gpu01:7000"


def test_notes_explain_precedence_and_batch_script():
    info = resolve_cluster({**SLURM_2x2, "TF_CONFIG": tf_config(
        {"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0})})
    assert any("TF_CONFIG takes precedence" in n for n in info.notes)
    info = resolve_cluster({"SLURM_JOB_ID": "5", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert any("srun" in n for n in info.notes)


HOSTLISTS = [
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-03]", ["n01", "n02", "n03"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("n[1,3,5-6]", ["n1", "n3", "n5", "n6"]),
    ("a[1-2],b3,c[4]", ["a1", "a2", "b3", "c4"]),
    ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
    ("gpu-[1-2].cluster", ["gpu-1.cluster", "gpu-2.cluster"]),
    ("x[09-10]y", ["x09y", "x10y"]),
]


@pytest.mark.parametrize("text,hosts", HOSTLISTS)
def test_expand_hostlist(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["", "n[1-", "n1-2]", "n[]", "n[a-b]", "n[3-1]", "a,,b",
                                  "n[[1]]"])
def test_expand_hostlist_rejects(text):
    with pytest.raises(ClusterConfigError, match="SLURM_STEP_NODELIST"):
        expand_hostlist(text)


@pytest.mark.parametrize("text,counts", [("4", [4]), ("2(x3)", [2, 2, 2]),
                                         ("2(x2),1,3(x1)", [2, 2, 1, 3])])
def test_expand_tasks_per_node(text, counts):
    assert expand_tasks_per_node(text) == counts
