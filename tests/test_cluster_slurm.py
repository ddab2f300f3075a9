"""SLURM job steps (node lists, tasks per node, distributions, ports), and host-list syntax."""

import pytest

from _cluster import SLURM_2x2, table_tests, tf_config
from keras_dp.cluster import expand_hostlist, expand_tasks_per_node, resolve_cluster
from keras_dp.errors import ClusterConfigError

VALID = [
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
]

INVALID = [
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
]


test_valid_environments, test_bad_input_names_variable_field_and_fix = table_tests(
    VALID, INVALID)


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
