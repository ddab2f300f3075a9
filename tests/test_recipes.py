"""Multi-node recipes (examples/): the environment each manager sets -> TF_CONFIG.

Each test reads the recipe file for the numbers that matter (nodes, tasks,
replicas, ports), builds the environment that manager gives each process, and
checks what `keras_dp.resolve_cluster` and `keras-dp tf-config` make of it.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from _multiproc import ROOT, base_env
from keras_dp import resolve_cluster
from keras_dp.cli import main
from keras_dp.strategy import gpu_slice

EXAMPLES = os.path.join(ROOT, "examples")


def read(*path):
    with open(os.path.join(EXAMPLES, *path), encoding="utf-8") as handle:
        return handle.read()


def manifests(*path):
    """The Kubernetes objects of a YAML file, by kind."""
    yaml = pytest.importorskip("yaml")
    return {doc["kind"]: doc for doc in yaml.safe_load_all(read(*path)) if doc}


def container(pod_template):
    (only,) = pod_template["spec"]["containers"]
    return only


def tf_config_cli(monkeypatch, capsys, environ):
    """`keras-dp tf-config` run with exactly `environ`."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["tf-config"]) == 0
    return json.loads(capsys.readouterr().out)


def check_cluster(environs, addresses, monkeypatch, capsys):
    for rank, environ in enumerate(environs):
        info = resolve_cluster(environ)
        assert info.worker_addresses == addresses
        assert info.task_index == rank and info.is_chief == (rank == 0)
        expected = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}}
        assert tf_config_cli(monkeypatch, capsys, environ) == expected


def test_slurm_sbatch_with_srun(monkeypatch, capsys):
    script = read("slurm", "train.sbatch")
    nodes = int(re.search(r"#SBATCH --nodes=(\d+)", script).group(1))
    per_node = int(re.search(r"#SBATCH --ntasks-per-node=(\d+)", script).group(1))
    gpus = int(re.search(r"#SBATCH --gpus-per-node=(\d+)", script).group(1))
    port = int(re.search(r"KERAS_DP_PORT_BASE:-(\d+)", script).group(1))
    assert re.search(r"^srun keras-dp train", script, re.M)
    assert nodes > 1 and gpus == per_node > 1  # N nodes x G GPUs, one task per GPU
    tasks = nodes * per_node
    common = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": f"gpu[01-{nodes:02d}]",
              "SLURM_NTASKS": str(tasks), "SLURM_NNODES": str(nodes),
              "KERAS_DP_PORT_BASE": str(port)}
    # What srun sets in each task of the step.
    environs = [dict(common, SLURM_STEP_ID="0", SLURM_PROCID=str(rank),
                     SLURM_STEP_NUM_TASKS=str(tasks), SLURM_STEP_NODELIST=f"gpu[01-{nodes:02d}]",
                     SLURM_STEP_TASKS_PER_NODE=f"{per_node}(x{nodes})",
                     SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node))
                for rank in range(tasks)]
    addresses = [f"gpu{node + 1:02d}:{port + local}"
                 for node in range(nodes) for local in range(per_node)]
    check_cluster(environs, addresses, monkeypatch, capsys)
    info = resolve_cluster(environs[per_node + 1])
    assert (info.local_rank, info.local_size) == (1, per_node)
    # Every task sees the node's G GPUs and keeps the one of its local rank...
    slices = [gpu_slice(gpus, info.local_rank, info.local_size)
              for info in map(resolve_cluster, environs)]
    assert slices == [(local, local + 1) for _ in range(nodes) for local in range(per_node)]
    # ...unless SLURM bound one GPU per task (--gpus-per-task=1): nothing to split.
    assert gpu_slice(1, 1, per_node) is None
    # The batch script's own shell (not an srun step) trains alone, with a note.
    shell = dict(common, SLURM_PROCID="0", SLURM_STEP_ID="batch")
    info = resolve_cluster(shell)
    assert not info.is_multi_worker and any("srun" in note for note in info.notes)
    # A preempted step (all workers exit 75) is requeued.
    assert re.search(r'"\$status" -eq 75 .*\n\s*scontrol requeue', script)


def test_kubeflow_tfjob(monkeypatch, capsys):
    job = manifests("kubernetes", "tfjob.yaml")["TFJob"]
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    replicas = worker["replicas"]
    train = container(worker["template"])
    assert train["command"] == ["keras-dp", "train"]
    (port,) = [p["containerPort"] for p in train["ports"] if p["name"] == "tfjob-port"]
    addresses = [f"{name}-worker-{i}.{namespace}.svc:{port}" for i in range(replicas)]
    for index in range(replicas):
        # What the training operator puts in each pod.
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index},
                     "environment": "cloud"}
        environ = {"TF_CONFIG": json.dumps(tf_config)}
        info = resolve_cluster(environ)
        assert info.source == "tf_config" and info.worker_addresses == addresses
        assert info.task_index == index and info.is_chief == (index == 0)
        assert tf_config_cli(monkeypatch, capsys, environ) == tf_config  # used unchanged
    check_shared_output(worker["template"])


def check_shared_output(pod_template):
    """The output directory (model, backups) is on a volume every worker mounts."""
    train = container(pod_template)
    output_dir = train["args"][train["args"].index("--output-dir") + 1]
    mounts = {m["name"]: m["mountPath"] for m in train["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod_template["spec"]["volumes"]}
    assert any(output_dir.startswith(path + "/") and name in claims
               for name, path in mounts.items()), (output_dir, mounts, claims)


def test_kubernetes_indexed_job(monkeypatch, capsys):
    objects = manifests("kubernetes", "indexed-job.yaml")
    job, service = objects["Job"], objects["Service"]
    spec, pod = job["spec"], job["spec"]["template"]
    assert spec["completionMode"] == "Indexed" and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    completions = spec["completions"]
    assert spec["parallelism"] == completions  # every worker runs at once
    train = container(pod)
    env = {e["name"]: e["value"] for e in train["env"]}
    assert int(env["KERAS_DP_NUM_WORKERS"]) == completions
    assert env["KERAS_DP_HOST_PATTERN"] == \
        f"{job['metadata']['name']}-{{index}}.{service['metadata']['name']}"
    port = int(env["KERAS_DP_PORT_BASE"])
    assert [p["containerPort"] for p in train["ports"]] == [port]
    addresses = [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{port}"
                 for i in range(completions)]
    # Kubernetes adds JOB_COMPLETION_INDEX to each pod of an Indexed Job.
    environs = [dict(env, JOB_COMPLETION_INDEX=str(i)) for i in range(completions)]
    check_cluster(environs, addresses, monkeypatch, capsys)
    # Preempted (exit 75, a backup saved) does not count against backoffLimit.
    ignored = [rule["onExitCodes"]["values"] for rule in spec["podFailurePolicy"]["rules"]
               if rule["action"] == "Ignore" and "onExitCodes" in rule]
    assert ignored == [[75]]
    check_shared_output(pod)
    # The same training as the TFJob.
    tfjob = container(manifests("kubernetes", "tfjob.yaml")["TFJob"]["spec"]["tfReplicaSpecs"]
                      ["Worker"]["template"])
    assert (train["command"], train["args"]) == (tfjob["command"], tfjob["args"])


def test_ray_train_tf_config(monkeypatch, capsys):
    """Ray Train's TensorflowTrainer sets TF_CONFIG (and TF_USE_LEGACY_KERAS) per worker."""
    source = read("ray", "train_ray.py")
    assert "TensorflowTrainer" in source and "keras_dp.scope()" in source
    addresses = ["127.0.0.1:41001", "127.0.0.1:41002"]
    for rank in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}}
        environ = {"TF_CONFIG": json.dumps(tf_config), "TF_USE_LEGACY_KERAS": "1"}
        info = resolve_cluster(environ)
        assert info.source == "tf_config" and info.is_chief == (rank == 0)
        assert tf_config_cli(monkeypatch, capsys, environ) == tf_config


def test_open_mpi_mpirun(monkeypatch, capsys, tmp_path):
    script = read("mpi", "run.sh")
    assert "mpirun" in script and "keras-dp train" in script
    port = int(re.search(r"KERAS_DP_PORT_BASE:-(\d+)", script).group(1))
    # One node: mpirun -np 2.
    environs = [{"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "2",
                 "OMPI_COMM_WORLD_LOCAL_RANK": str(r), "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                 "KERAS_DP_PORT_BASE": str(port)} for r in range(2)]
    check_cluster(environs, [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"], monkeypatch, capsys)
    # Two nodes with the hostfile the recipe passes (--map-by slot).
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1 slots=2\nnode2 slots=2\n")
    environs = [{"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "4",
                 "OMPI_COMM_WORLD_LOCAL_RANK": str(r % 2), "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                 "KERAS_DP_HOSTFILE": str(hostfile), "KERAS_DP_PORT_BASE": str(port)}
                for r in range(4)]
    check_cluster(environs, [f"node1:{port}", f"node1:{port + 1}", f"node2:{port}",
                             f"node2:{port + 1}"], monkeypatch, capsys)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) not installed")
def test_real_mpirun_gives_each_rank_its_tf_config():
    env = base_env({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    done = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", sys.executable, "-m",
                           "keras_dp", "tf-config"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    configs = sorted((json.loads(line) for line in done.stdout.splitlines()
                      if line.startswith("{")), key=lambda c: c["task"]["index"])
    assert [c["task"]["index"] for c in configs] == [0, 1]
    assert configs[0]["cluster"] == configs[1]["cluster"] == {
        "worker": ["127.0.0.1:8888", "127.0.0.1:8889"]}
