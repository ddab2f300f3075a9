"""TF_CONFIG as Kubeflow, Ray and Vertex AI set it, used unchanged, and every malformed one."""

import json

from _cluster import SLURM_2x2, check_invalid, check_valid, invalid, tf_config, valid
from keras_dp.cluster import resolve_cluster
from keras_dp.errors import ClusterConfigError, ConflictingSourcesError

VALID = [
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
]

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
]


@valid(VALID)
def test_valid_environments(environ, expected):
    check_valid(environ, expected)


@invalid(INVALID)
def test_bad_input_names_variable_field_and_fix(environ, variable, words, error):
    check_invalid(environ, variable, words, error)


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
